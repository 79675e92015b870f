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
    // The join ticket: from the launch environment (development: `adb shell setprop` and a
    // wrapper script) or a file the app was given in its external files dir.
    let ticket = std::env::var("MESHWORK_TICKET").ok().or_else(|| {
        app.external_data_path()
            .and_then(|d| std::fs::read_to_string(d.join("ticket.txt")).ok())
    });
    let Some(ticket) =
        ticket.and_then(|t| meshwork_protocol::wire::JoinTicket::from_text(t.trim()).ok())
    else {
        eprintln!("meshwork-quest: no join ticket (MESHWORK_TICKET or files/ticket.txt)");
        return;
    };
    let mut seed = [0u8; 32];
    if getrandom::fill(&mut seed).is_err() {
        eprintln!("meshwork-quest: no randomness for the signing key");
        return;
    }
    // The name others see: from the environment or files/name.txt (else "Quest <key>").
    let name = std::env::var("MESHWORK_NAME").ok().or_else(|| {
        app.external_data_path()
            .and_then(|d| std::fs::read_to_string(d.join("name.txt")).ok())
    });
    if let Err(e) = crate::headset::run(&platform, &ticket, seed, name.as_deref().map(str::trim)) {
        eprintln!("meshwork-quest: {e}");
    }
}
