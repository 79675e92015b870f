//! The headset front end through OpenXR (`openxr` 0.22, the loader opened at run time).
//!
//! What is here: the session lifecycle as a pure state machine ([`on_state`], tested), the
//! action set and its suggested bindings for the Oculus Touch and Khronos simple controller
//! profiles ([`Actions`]), hand tracking detection, and instance/system creation ([`probe`]).
//! What is not: creating the session on a Vulkan device shared with wgpu
//! (`XR_KHR_vulkan_enable2` + wgpu-hal interop) and rendering both eyes into the runtime's
//! swapchain images. `docs/quest.md` lists this plainly; no runtime exists on these machines to
//! prove any of it.

use openxr as xr;

/// What the app should do after a session state change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LifecycleAction {
    /// Nothing.
    None,
    /// `xrBeginSession`: start the frame loop.
    Begin,
    /// `xrEndSession`: stop submitting frames (the runtime asked).
    End,
    /// Leave: destroy the session and the instance.
    Exit,
}

/// Whether frames should be rendered and input read in this state.
#[must_use]
pub fn running(state: xr::SessionState) -> bool {
    matches!(
        state,
        xr::SessionState::SYNCHRONIZED | xr::SessionState::VISIBLE | xr::SessionState::FOCUSED
    )
}

/// The lifecycle rule: ready → begin, stopping → end, exiting or loss pending → exit.
#[must_use]
pub fn on_state(state: xr::SessionState) -> LifecycleAction {
    match state {
        xr::SessionState::READY => LifecycleAction::Begin,
        xr::SessionState::STOPPING => LifecycleAction::End,
        xr::SessionState::EXITING | xr::SessionState::LOSS_PENDING => LifecycleAction::Exit,
        _ => LifecycleAction::None,
    }
}

/// Input actions, one set, per-hand subaction paths.
#[allow(missing_debug_implementations, reason = "wraps OpenXR handles")]
pub struct Actions {
    /// The set (attached to the session, synced each frame).
    pub set: xr::ActionSet,
    /// Grip squeeze (grab).
    pub grab: xr::Action<f32>,
    /// Trigger (select, press panel buttons).
    pub trigger: xr::Action<f32>,
    /// Thumbstick (snap turn).
    pub thumbstick: xr::Action<xr::Vector2f>,
    /// A / X: add.
    pub primary: xr::Action<bool>,
    /// B / Y: delete.
    pub secondary: xr::Action<bool>,
    /// Menu: show or hide the panel.
    pub menu: xr::Action<bool>,
    /// `world_from_grip` per hand.
    pub grip_pose: xr::Action<xr::Posef>,
    /// `world_from_aim` per hand.
    pub aim_pose: xr::Action<xr::Posef>,
    /// Haptic pulses (snap ticks, grabs, adds).
    pub haptic: xr::Action<xr::Haptic>,
    /// `/user/hand/left`, `/user/hand/right`.
    pub hands: [xr::Path; 2],
}

impl Actions {
    /// Creates the actions and suggests bindings for the profiles the app supports.
    ///
    /// # Errors
    /// The runtime's error.
    pub fn new(instance: &xr::Instance) -> xr::Result<Self> {
        let hands = [
            instance.string_to_path("/user/hand/left")?,
            instance.string_to_path("/user/hand/right")?,
        ];
        let set = instance.create_action_set("edit", "Editing", 0)?;
        let a = Self {
            grab: set.create_action("grab", "Grab", &hands)?,
            trigger: set.create_action("trigger", "Select", &hands)?,
            thumbstick: set.create_action("thumbstick", "Turn", &hands)?,
            primary: set.create_action("primary", "Add", &hands)?,
            secondary: set.create_action("secondary", "Delete", &hands)?,
            menu: set.create_action("menu", "Panel", &hands)?,
            grip_pose: set.create_action("grip_pose", "Hand", &hands)?,
            aim_pose: set.create_action("aim_pose", "Pointer", &hands)?,
            haptic: set.create_action("haptic", "Feedback", &hands)?,
            set,
            hands,
        };
        let p = |s: &str| instance.string_to_path(s);
        let mut touch = Vec::new();
        for side in ["left", "right"] {
            let h = |s: &str| p(&format!("/user/hand/{side}/input/{s}"));
            touch.push(xr::Binding::new(&a.grab, h("squeeze/value")?));
            touch.push(xr::Binding::new(&a.trigger, h("trigger/value")?));
            touch.push(xr::Binding::new(&a.thumbstick, h("thumbstick")?));
            touch.push(xr::Binding::new(&a.grip_pose, h("grip/pose")?));
            touch.push(xr::Binding::new(&a.aim_pose, h("aim/pose")?));
            touch.push(xr::Binding::new(
                &a.haptic,
                p(&format!("/user/hand/{side}/output/haptic"))?,
            ));
        }
        touch.push(xr::Binding::new(
            &a.primary,
            p("/user/hand/right/input/a/click")?,
        ));
        touch.push(xr::Binding::new(
            &a.secondary,
            p("/user/hand/right/input/b/click")?,
        ));
        touch.push(xr::Binding::new(
            &a.primary,
            p("/user/hand/left/input/x/click")?,
        ));
        touch.push(xr::Binding::new(
            &a.secondary,
            p("/user/hand/left/input/y/click")?,
        ));
        touch.push(xr::Binding::new(
            &a.menu,
            p("/user/hand/left/input/menu/click")?,
        ));
        instance.suggest_interaction_profile_bindings(
            p("/interaction_profiles/oculus/touch_controller")?,
            &touch,
        )?;
        // The Khronos simple controller: select is the trigger, menu adds; no grip or stick.
        let mut simple = Vec::new();
        for side in ["left", "right"] {
            let h = |s: &str| p(&format!("/user/hand/{side}/input/{s}"));
            simple.push(xr::Binding::new(&a.trigger, h("select/click")?));
            simple.push(xr::Binding::new(&a.primary, h("menu/click")?));
            simple.push(xr::Binding::new(&a.grip_pose, h("grip/pose")?));
            simple.push(xr::Binding::new(&a.aim_pose, h("aim/pose")?));
            simple.push(xr::Binding::new(
                &a.haptic,
                p(&format!("/user/hand/{side}/output/haptic"))?,
            ));
        }
        instance.suggest_interaction_profile_bindings(
            p("/interaction_profiles/khr/simple_controller")?,
            &simple,
        )?;
        Ok(a)
    }
}

/// What the runtime offers.
#[derive(Clone, Debug)]
pub struct Probe {
    /// Runtime name and version.
    pub runtime: String,
    /// `XR_KHR_vulkan_enable2` is available.
    pub vulkan_enable2: bool,
    /// `XR_EXT_hand_tracking` is available (the fallback when controllers are put down).
    pub hand_tracking: bool,
}

/// Loads the OpenXR loader, creates the instance and finds the headset; creates the actions
/// (desktop: no platform information).
///
/// # Errors
/// A sentence naming what is missing (no loader on a desktop without a runtime, no headset).
pub fn probe() -> Result<Probe, String> {
    probe_with(&())
}

/// Loads the OpenXR loader and creates the instance with what the app uses where the runtime
/// has it: `XR_KHR_vulkan_enable2`, `XR_EXT_hand_tracking` (the fallback when controllers are
/// put down) and, on Android, `XR_KHR_android_create_instance`. Returns what was available.
///
/// # Errors
/// No loader, or the runtime refused the instance.
pub fn create_instance(
    platform: &(impl xr::PlatformInfo + ?Sized),
) -> Result<(xr::Instance, xr::ExtensionSet), String> {
    // SAFETY: `Entry::load` opens the platform's OpenXR loader (`libopenxr_loader.so`), which
    // the OpenXR specification defines; on the headset it is the vendor's conformant loader.
    #[allow(
        unsafe_code,
        reason = "opening the OpenXR loader at run time is an FFI boundary"
    )]
    let entry = unsafe { xr::Entry::load(platform) }
        .map_err(|e| format!("no OpenXR loader on this machine ({e}); use `meshwork-quest sim`"))?;
    let available = entry.enumerate_extensions().map_err(|e| e.to_string())?;
    let mut wanted = xr::ExtensionSet::default();
    wanted.khr_vulkan_enable2 = available.khr_vulkan_enable2;
    wanted.ext_hand_tracking = available.ext_hand_tracking;
    #[cfg(target_os = "android")]
    {
        wanted.khr_android_create_instance = available.khr_android_create_instance;
    }
    let instance = entry
        .create_instance(
            &xr::ApplicationInfo {
                application_name: "Meshwork",
                application_version: 1,
                engine_name: "meshwork-quest",
                engine_version: 1,
                api_version: xr::Version::new(1, 0, 0),
            },
            &wanted,
            &[],
            platform,
        )
        .map_err(|e| format!("OpenXR instance: {e}"))?;
    Ok((instance, available))
}

/// [`probe`] with the platform's information (on Android: the Java VM and the activity, which
/// the loader and `XR_KHR_android_create_instance` need).
///
/// # Errors
/// As [`probe`].
pub fn probe_with(platform: &(impl xr::PlatformInfo + ?Sized)) -> Result<Probe, String> {
    let (instance, available) = create_instance(platform)?;
    let props = instance.properties().map_err(|e| e.to_string())?;
    instance
        .system(xr::FormFactor::HEAD_MOUNTED_DISPLAY)
        .map_err(|e| format!("no headset: {e}"))?;
    Actions::new(&instance).map_err(|e| format!("actions: {e}"))?;
    Ok(Probe {
        runtime: format!("{} {}", props.runtime_name, props.runtime_version),
        vulkan_enable2: available.khr_vulkan_enable2,
        hand_tracking: available.ext_hand_tracking,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lifecycle_follows_the_runtime() {
        assert_eq!(on_state(xr::SessionState::IDLE), LifecycleAction::None);
        assert_eq!(on_state(xr::SessionState::READY), LifecycleAction::Begin);
        assert_eq!(
            on_state(xr::SessionState::SYNCHRONIZED),
            LifecycleAction::None
        );
        assert_eq!(on_state(xr::SessionState::FOCUSED), LifecycleAction::None);
        assert_eq!(on_state(xr::SessionState::STOPPING), LifecycleAction::End);
        assert_eq!(on_state(xr::SessionState::EXITING), LifecycleAction::Exit);
        assert_eq!(
            on_state(xr::SessionState::LOSS_PENDING),
            LifecycleAction::Exit
        );
        assert!(running(xr::SessionState::VISIBLE) && running(xr::SessionState::FOCUSED));
        assert!(!running(xr::SessionState::READY) && !running(xr::SessionState::STOPPING));
    }

    #[test]
    fn without_a_runtime_the_probe_says_what_to_do() {
        // CI machines have no OpenXR loader: the message must point at the simulator.
        if let Err(e) = probe() {
            assert!(e.contains("OpenXR") || e.contains("headset"), "{e}");
        }
    }
}
