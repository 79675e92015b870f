//! The Android (Quest) entry point: the NativeActivity calls `android_main`, which probes
//! OpenXR with the Android platform info. Packaging: `deploy/quest/` and `docs/quest.md`.

/// Called by `android-activity` on the app's main thread.
#[unsafe(no_mangle)]
#[allow(unsafe_code, reason = "the symbol the Android activity glue looks up")]
fn android_main(app: android_activity::AndroidApp) {
    let _ = app;
    match crate::xr::probe() {
        Ok(p) => eprintln!(
            "meshwork-quest: OpenXR {} (rendering to the headset is not in this build)",
            p.runtime
        ),
        Err(e) => eprintln!("meshwork-quest: {e}"),
    }
}
