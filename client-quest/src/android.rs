//! The Android (Quest) entry point: the NativeActivity calls `android_main`, which probes
//! OpenXR with the Android platform info. Packaging: `deploy/quest/` and `docs/quest.md`.

/// Called by `android-activity` on the app's main thread.
#[unsafe(no_mangle)]
#[allow(unsafe_code, reason = "the symbol the Android activity glue looks up")]
fn android_main(app: android_activity::AndroidApp) {
    // SAFETY: android-activity hands out the process's JavaVM and this NativeActivity's
    // `android.app.Activity` reference, valid for the app's lifetime: what the OpenXR loader
    // (XR_KHR_loader_init_android) and XR_KHR_android_create_instance require.
    let platform =
        unsafe { openxr::AndroidPlatformInfo::new(app.vm_as_ptr(), app.activity_as_ptr()) };
    match crate::xr::probe_with(&platform) {
        Ok(p) => eprintln!(
            "meshwork-quest: OpenXR {} (rendering to the headset is not in this build)",
            p.runtime
        ),
        Err(e) => eprintln!("meshwork-quest: {e}"),
    }
}
