//! The headset frame loop: an OpenXR session on a Vulkan device that wgpu also renders with
//! (`XR_KHR_vulkan_enable2`: the runtime creates the Vulkan instance and device, wgpu adopts
//! them through wgpu-hal), the runtime's swapchain images wrapped as wgpu textures (one
//! two-layer image per frame, both eyes drawn in one multiview pass), the actions read into the same
//! [`FrameInput`] the simulator produces, haptics sent back.
//!
//! **Not run on these machines**: no OpenXR runtime or headset exists here (`docs/quest.md`).
//! It compiles for Linux and Android in CI; the app loop, renderer and input it drives are the
//! ones the simulator tests exercise.
#![allow(
    unsafe_code,
    reason = "Vulkan and OpenXR handles cross the FFI boundary between the runtime and wgpu-hal; each block says why it holds"
)]

use std::time::Duration;

use ash::vk::{self, Handle as _};
use glam::{Mat4, Quat, Vec2, Vec3, Vec4};
use meshwork_protocol::Ed25519Signer;
use meshwork_protocol::wire::JoinTicket;
use openxr as xr;

use crate::app::{App, FrameInput, HandInput};
use crate::input::Pose;
use crate::net::Net;
use crate::render::{DrawItem, Renderer};
use crate::xr::{Actions, LifecycleAction, on_state};

const VIEW_TYPE: xr::ViewConfigurationType = xr::ViewConfigurationType::PRIMARY_STEREO;
/// Vulkan 1.1: multiview and the rest wgpu needs are core there.
const VK_VERSION: u32 = vk::make_api_version(0, 1, 1, 0);

fn err(what: &str) -> impl Fn(xr::sys::Result) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// The Vulkan instance and device the runtime created, adopted by wgpu.
struct Gpu {
    renderer_device: (wgpu::Device, wgpu::Queue),
    session_info: xr::vulkan::SessionCreateInfo,
}

fn vulkan(instance: &xr::Instance, system: xr::SystemId) -> Result<Gpu, String> {
    let reqs = instance
        .graphics_requirements::<xr::Vulkan>(system)
        .map_err(err("Vulkan requirements"))?;
    if xr::Version::new(1, 1, 0) < reqs.min_api_version_supported {
        return Err(format!(
            "the runtime needs Vulkan {}",
            reqs.min_api_version_supported
        ));
    }
    // SAFETY: loading the system's Vulkan loader (`libvulkan.so`), defined by the Vulkan spec.
    let entry = unsafe { ash::Entry::load() }.map_err(|e| format!("Vulkan loader: {e}"))?;
    let flags = wgpu::InstanceFlags::empty();
    let extensions = wgpu::hal::vulkan::Instance::desired_extensions(&entry, VK_VERSION, flags)
        .map_err(|e| format!("Vulkan extensions: {e}"))?;
    let extension_ptrs: Vec<*const std::ffi::c_char> =
        extensions.iter().map(|e| e.as_ptr()).collect();
    let app_info = vk::ApplicationInfo::default()
        .application_name(c"Meshwork")
        .engine_name(c"meshwork-quest")
        .api_version(VK_VERSION);
    let create_info = vk::InstanceCreateInfo::default()
        .application_info(&app_info)
        .enabled_extension_names(&extension_ptrs);
    // SAFETY: `get_instance_proc_addr` is the loader's entry point and `create_info` outlives
    // the call; the runtime adds what it needs and returns a `VkInstance` created from `entry`.
    #[allow(
        clippy::missing_transmute_annotations,
        reason = "ash's and openxr-sys's PFN types are the same C signature"
    )]
    let raw_instance = unsafe {
        instance.create_vulkan_instance(
            system,
            std::mem::transmute(entry.static_fn().get_instance_proc_addr),
            std::ptr::from_ref(&create_info).cast(),
        )
    }
    .map_err(err("OpenXR creating the Vulkan instance"))?
    .map_err(|e| format!("Vulkan instance: {:?}", vk::Result::from_raw(e)))?;
    // SAFETY: `raw_instance` was just created from `entry`.
    let ash_instance = unsafe {
        ash::Instance::load(
            entry.static_fn(),
            vk::Instance::from_raw(raw_instance as u64),
        )
    };
    // SAFETY: `raw_instance` is the live instance the runtime just created for `system`.
    let physical = vk::PhysicalDevice::from_raw(
        unsafe { instance.vulkan_graphics_device(system, raw_instance) }
            .map_err(err("OpenXR choosing the Vulkan device"))? as u64,
    );
    // SAFETY: the instance was created from `entry` with `extensions` (wgpu's desired set,
    // which the runtime may only extend) at `VK_VERSION`; wgpu-hal takes ownership.
    let hal_instance = unsafe {
        wgpu::hal::vulkan::Instance::from_raw(
            entry.clone(),
            ash_instance.clone(),
            VK_VERSION,
            0,
            None,
            extensions,
            flags,
            wgpu::MemoryBudgetThresholds::default(),
            false,
            None,
        )
    }
    .map_err(|e| format!("wgpu adopting the Vulkan instance: {e}"))?;
    let exposed = hal_instance
        .expose_adapter(physical)
        .ok_or_else(|| "wgpu cannot use the runtime's Vulkan device".to_owned())?;
    // SAFETY: `physical` belongs to `ash_instance`.
    let family = unsafe { ash_instance.get_physical_device_queue_family_properties(physical) }
        .iter()
        .position(|q| q.queue_flags.contains(vk::QueueFlags::GRAPHICS))
        .and_then(|i| u32::try_from(i).ok())
        .ok_or_else(|| "the Vulkan device has no graphics queue".to_owned())?;
    // Multiview: both eyes in one pass (core in Vulkan 1.1).
    let features = wgpu::Features::MULTIVIEW;
    let device_extensions = exposed.adapter.required_device_extensions(features);
    let extension_ptrs: Vec<*const std::ffi::c_char> =
        device_extensions.iter().map(|e| e.as_ptr()).collect();
    let mut physical_features = exposed
        .adapter
        .physical_device_features(&device_extensions, features);
    let priorities = [1.0f32];
    let queues = [vk::DeviceQueueCreateInfo::default()
        .queue_family_index(family)
        .queue_priorities(&priorities)];
    let device_info = physical_features.add_to_device_create(
        vk::DeviceCreateInfo::default()
            .queue_create_infos(&queues)
            .enabled_extension_names(&extension_ptrs),
    );
    // SAFETY: as for the instance: the loader's entry point, `device_info` alive for the call.
    #[allow(clippy::missing_transmute_annotations, reason = "same C signature")]
    let raw_device = unsafe {
        instance.create_vulkan_device(
            system,
            std::mem::transmute(entry.static_fn().get_instance_proc_addr),
            physical.as_raw() as _,
            std::ptr::from_ref(&device_info).cast(),
        )
    }
    .map_err(err("OpenXR creating the Vulkan device"))?
    .map_err(|e| format!("Vulkan device: {:?}", vk::Result::from_raw(e)))?;
    // SAFETY: `raw_device` was created on `physical` from `ash_instance`.
    let ash_device = unsafe {
        ash::Device::load(
            ash_instance.fp_v1_0(),
            vk::Device::from_raw(raw_device as u64),
        )
    };
    let limits = crate::render::stereo_limits(2);
    // SAFETY: the device was created from this adapter with its required extensions and
    // features, one queue of `family`; wgpu-hal takes ownership.
    let open = unsafe {
        exposed.adapter.device_from_raw(
            ash_device,
            None,
            &device_extensions,
            features,
            &limits,
            &wgpu::MemoryHints::default(),
            family,
            0,
        )
    }
    .map_err(|e| format!("wgpu adopting the Vulkan device: {e}"))?;
    // SAFETY: the hal objects come from the instance/adapter they are handed to.
    let wgpu_instance = unsafe { wgpu::Instance::from_hal::<wgpu::hal::api::Vulkan>(hal_instance) };
    let adapter = unsafe { wgpu_instance.create_adapter_from_hal(exposed) };
    let devices = unsafe {
        adapter.create_device_from_hal(
            open,
            &wgpu::DeviceDescriptor {
                label: Some("meshwork-quest headset"),
                required_features: features,
                required_limits: limits.clone(),
                ..Default::default()
            },
        )
    }
    .map_err(|e| format!("wgpu device: {e}"))?;
    Ok(Gpu {
        renderer_device: devices,
        session_info: xr::vulkan::SessionCreateInfo {
            instance: raw_instance,
            physical_device: physical.as_raw() as _,
            device: raw_device,
            queue_family_index: family,
            queue_index: 0,
        },
    })
}

/// A pose from OpenXR.
fn pose(p: xr::Posef) -> Pose {
    Pose {
        position: Vec3::new(p.position.x, p.position.y, p.position.z),
        orientation: Quat::from_xyzw(
            p.orientation.x,
            p.orientation.y,
            p.orientation.z,
            p.orientation.w,
        ),
    }
}

/// An asymmetric projection from the runtime's field-of-view angles (wgpu clip space).
fn projection(fov: xr::Fovf, near: f32, far: f32) -> Mat4 {
    let (l, r) = (fov.angle_left.tan() * near, fov.angle_right.tan() * near);
    let (d, u) = (fov.angle_down.tan() * near, fov.angle_up.tan() * near);
    let (w, h) = (r - l, u - d);
    let z = far / (near - far);
    Mat4::from_cols(
        Vec4::new(2.0 * near / w, 0.0, 0.0, 0.0),
        Vec4::new(0.0, 2.0 * near / h, 0.0, 0.0),
        Vec4::new((r + l) / w, (u + d) / h, z, -1.0),
        Vec4::new(0.0, 0.0, z * near, 0.0),
    )
}

/// Runs the app on the headset until the runtime ends the session.
///
/// # Errors
/// A sentence for the first thing that fails (no runtime, no headset, no Vulkan).
#[allow(clippy::too_many_lines, reason = "one frame loop, read top to bottom")]
pub fn run(
    platform: &(impl xr::PlatformInfo + ?Sized),
    ticket: &JoinTicket,
    seed: [u8; 32],
    name: Option<&str>,
) -> Result<(), String> {
    let (instance, available) = crate::xr::create_instance(platform)?;
    if !available.khr_vulkan_enable2 {
        return Err("the OpenXR runtime lacks XR_KHR_vulkan_enable2".into());
    }
    let system = instance
        .system(xr::FormFactor::HEAD_MOUNTED_DISPLAY)
        .map_err(err("no headset"))?;
    let blend = *instance
        .enumerate_environment_blend_modes(system, VIEW_TYPE)
        .map_err(err("blend modes"))?
        .first()
        .ok_or("no blend mode")?;
    let actions = Actions::new(&instance).map_err(err("actions"))?;
    let gpu = vulkan(&instance, system)?;
    // SAFETY: the handles are the runtime-created Vulkan objects wgpu now owns; they outlive the
    // session (dropped after it at the end of this function).
    let (session, mut waiter, mut stream) =
        unsafe { instance.create_session::<xr::Vulkan>(system, &gpu.session_info) }
            .map_err(err("session"))?;
    session
        .attach_action_sets(&[&actions.set])
        .map_err(err("attach actions"))?;
    let stage = session
        .create_reference_space(xr::ReferenceSpaceType::STAGE, xr::Posef::IDENTITY)
        .or_else(|_| {
            session.create_reference_space(xr::ReferenceSpaceType::LOCAL, xr::Posef::IDENTITY)
        })
        .map_err(err("reference space"))?;
    let grip_spaces = [
        actions
            .grip_pose
            .create_space(&session, actions.hands[0], xr::Posef::IDENTITY)
            .map_err(err("grip space"))?,
        actions
            .grip_pose
            .create_space(&session, actions.hands[1], xr::Posef::IDENTITY)
            .map_err(err("grip space"))?,
    ];
    let aim_spaces = [
        actions
            .aim_pose
            .create_space(&session, actions.hands[0], xr::Posef::IDENTITY)
            .map_err(err("aim space"))?,
        actions
            .aim_pose
            .create_space(&session, actions.hands[1], xr::Posef::IDENTITY)
            .map_err(err("aim space"))?,
    ];
    let trackers = if available.ext_hand_tracking {
        [
            session.create_hand_tracker(xr::Hand::LEFT).ok(),
            session.create_hand_tracker(xr::Hand::RIGHT).ok(),
        ]
    } else {
        [None, None]
    };
    let views = instance
        .enumerate_view_configuration_views(system, VIEW_TYPE)
        .map_err(err("views"))?;
    let view = views.first().ok_or("no views")?;
    let (width, height) = (
        view.recommended_image_rect_width,
        view.recommended_image_rect_height,
    );
    let formats = session
        .enumerate_swapchain_formats()
        .map_err(err("formats"))?;
    let (vk_format, format) = [
        (
            vk::Format::R8G8B8A8_SRGB,
            wgpu::TextureFormat::Rgba8UnormSrgb,
        ),
        (
            vk::Format::B8G8R8A8_SRGB,
            wgpu::TextureFormat::Bgra8UnormSrgb,
        ),
    ]
    .into_iter()
    .find(|(vk, _)| formats.contains(&(vk.as_raw() as u32)))
    .ok_or("the runtime offers no sRGB swapchain format")?;
    let mut swapchain = session
        .create_swapchain(&xr::SwapchainCreateInfo {
            create_flags: xr::SwapchainCreateFlags::EMPTY,
            usage_flags: xr::SwapchainUsageFlags::COLOR_ATTACHMENT
                | xr::SwapchainUsageFlags::SAMPLED,
            format: vk_format.as_raw() as u32,
            sample_count: 1,
            width,
            height,
            face_count: 1,
            array_size: 2,
            mip_count: 1,
        })
        .map_err(err("swapchain"))?;
    let (device, queue) = gpu.renderer_device;
    let size = wgpu::Extent3d {
        width,
        height,
        depth_or_array_layers: 2,
    };
    let images: Vec<wgpu::Texture> = swapchain
        .enumerate_images()
        .map_err(err("swapchain images"))?
        .into_iter()
        .map(|image| {
            let hal_desc = wgpu::hal::TextureDescriptor {
                label: Some("xr swapchain"),
                size,
                mip_level_count: 1,
                sample_count: 1,
                dimension: wgpu::TextureDimension::D2,
                format,
                usage: wgpu::TextureUses::COLOR_TARGET,
                memory_flags: wgpu::hal::MemoryFlags::empty(),
                view_formats: vec![],
            };
            // SAFETY: the runtime owns `image` (2 layers, `format`, colour attachment) for the
            // swapchain's lifetime, which outlives these textures (`External` memory, a no-op
            // drop callback: wgpu never frees it).
            unsafe {
                let hal = device.as_hal::<wgpu::hal::api::Vulkan>().map(|d| {
                    d.texture_from_raw(
                        vk::Image::from_raw(image),
                        &hal_desc,
                        Some(Box::new(|| {})),
                        wgpu::hal::vulkan::TextureMemory::External,
                    )
                });
                hal.map(|t| {
                    device.create_texture_from_hal::<wgpu::hal::api::Vulkan>(
                        t,
                        &wgpu::TextureDescriptor {
                            label: Some("xr swapchain"),
                            size,
                            mip_level_count: 1,
                            sample_count: 1,
                            dimension: wgpu::TextureDimension::D2,
                            format,
                            usage: wgpu::TextureUsages::RENDER_ATTACHMENT,
                            view_formats: &[],
                        },
                        wgpu::TextureUses::UNINITIALIZED,
                    )
                })
            }
        })
        .collect::<Option<Vec<_>>>()
        .ok_or("wgpu is not running on Vulkan")?;
    let mut renderer = Renderer::for_device(
        device,
        queue,
        format,
        (width, height),
        2,
        "headset (Vulkan)".into(),
    );
    let net = Net::connect(ticket)?;
    let signer = Ed25519Signer::from_seed(seed);
    let name = name.map_or_else(|| crate::app::default_display_name(&signer), str::to_owned);
    let mut app = App::new(signer, ticket.invite.clone(), 0.05);
    app.set_display_name(&name);
    let mut events = xr::EventDataBuffer::new();
    let mut running = false;
    let mut stage_from_tracking = Mat4::IDENTITY; // snap turns rotate the stage about the user
    let mut pump = crate::pump::Pump::new();
    loop {
        while let Some(event) = instance.poll_event(&mut events).map_err(err("events"))? {
            match event {
                xr::Event::SessionStateChanged(e) => match on_state(e.state()) {
                    LifecycleAction::Begin => {
                        session.begin(VIEW_TYPE).map_err(err("begin"))?;
                        running = true;
                    }
                    LifecycleAction::End => {
                        session.end().map_err(err("end"))?;
                        running = false;
                    }
                    LifecycleAction::Exit => return Ok(()),
                    LifecycleAction::None => {}
                },
                xr::Event::InstanceLossPending(_) => return Ok(()),
                _ => {}
            }
        }
        crate::pump::Pump::receive(&mut app, &net)?;
        if !running {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        let state = waiter.wait().map_err(err("wait frame"))?;
        stream.begin().map_err(err("begin frame"))?;
        if !state.should_render {
            stream
                .end(state.predicted_display_time, blend, &[])
                .map_err(err("end frame"))?;
            continue;
        }
        let t = state.predicted_display_time;
        session
            .sync_actions(&[xr::ActiveActionSet::new(&actions.set)])
            .map_err(err("sync actions"))?;
        let (_, located) = session
            .locate_views(VIEW_TYPE, t, &stage)
            .map_err(err("locate views"))?;
        let mut hands = [None, None];
        let to_world = |p: Pose| Pose {
            position: stage_from_tracking.transform_point3(p.position),
            orientation: Quat::from_mat4(&stage_from_tracking) * p.orientation,
        };
        for (i, slot) in hands.iter_mut().enumerate() {
            let path = actions.hands[i];
            let located_controller = match (
                grip_spaces[i].locate(&stage, t),
                aim_spaces[i].locate(&stage, t),
            ) {
                (Ok(grip), Ok(aim))
                    if grip
                        .location_flags
                        .contains(xr::SpaceLocationFlags::POSITION_VALID) =>
                {
                    Some((grip, aim))
                }
                _ => None,
            };
            if let Some((grip, aim)) = located_controller {
                let float =
                    |a: &xr::Action<f32>| a.state(&session, path).map_or(0.0, |s| s.current_state);
                let button =
                    |a: &xr::Action<bool>| a.state(&session, path).is_ok_and(|s| s.current_state);
                let stick = actions
                    .thumbstick
                    .state(&session, path)
                    .map_or(Vec2::ZERO, |s| {
                        Vec2::new(s.current_state.x, s.current_state.y)
                    });
                *slot = Some(HandInput {
                    world_from_grip: to_world(pose(grip.pose)),
                    world_from_aim: to_world(pose(aim.pose)),
                    trigger: float(&actions.trigger),
                    grip: float(&actions.grab),
                    thumbstick: stick,
                    primary: button(&actions.primary),
                    secondary: button(&actions.secondary),
                });
            } else if let Some(tracker) = &trackers[i]
                && let Ok(Some(joints)) = stage.locate_hand_joints(tracker, t)
            {
                // No controller: the tracked hand stands in (pinch selects, fist grabs).
                let at = |j: xr::HandJoint| {
                    let p = joints[j.into_raw() as usize].pose;
                    to_world(pose(p))
                };
                let mapped = crate::input::hand_as_controller(&crate::input::HandJoints {
                    palm: at(xr::HandJoint::PALM),
                    wrist: at(xr::HandJoint::WRIST).position,
                    index_knuckle: at(xr::HandJoint::INDEX_PROXIMAL).position,
                    thumb_tip: at(xr::HandJoint::THUMB_TIP).position,
                    index_tip: at(xr::HandJoint::INDEX_TIP).position,
                    middle_tip: at(xr::HandJoint::MIDDLE_TIP).position,
                    ring_tip: at(xr::HandJoint::RING_TIP).position,
                });
                *slot = Some(HandInput {
                    world_from_grip: mapped.0,
                    world_from_aim: mapped.1,
                    trigger: mapped.2,
                    grip: mapped.3,
                    thumbstick: Vec2::ZERO,
                    primary: false,
                    secondary: false,
                });
            }
        }
        let head = located.first().map_or(Pose::IDENTITY, |v| pose(v.pose));
        let input = FrameInput {
            stage_from_head: head,
            hands,
        };
        let crate::pump::Pumped {
            out, items, panel, ..
        } = pump.frame(&mut app, &net, &input, (width, height));
        for (hand, amplitude, seconds) in &out.haptics {
            let path = actions.hands[*hand as usize];
            #[allow(
                clippy::cast_possible_truncation,
                reason = "pulse lengths are milliseconds: far inside i64 nanoseconds"
            )]
            let nanos = (f64::from(*seconds) * 1e9).round() as i64;
            let pulse = xr::HapticVibration::new()
                .amplitude(*amplitude)
                .duration(xr::Duration::from_nanos(nanos))
                .frequency(xr::FREQUENCY_UNSPECIFIED);
            let _ = actions.haptic.apply_feedback(&session, path, &pulse);
        }
        if let Some(turn) = out.snap_turn {
            stage_from_tracking = Mat4::from_rotation_y(turn) * stage_from_tracking;
        }
        // Both eyes, one layer each of the acquired image.
        let image = swapchain.acquire_image().map_err(err("acquire"))? as usize;
        swapchain
            .wait_image(xr::Duration::INFINITE)
            .map_err(err("wait image"))?;
        if let Some(image) = panel {
            renderer.set_panel(&image);
        }
        let overlays = crate::sim::overlays(&input, out.vignette);
        let drawn: Vec<DrawItem<'_>> = items.iter().map(crate::sim::OwnedItem::as_item).collect();
        // Both eyes in one multiview pass into the image's two layers.
        let clips: Vec<Mat4> = located
            .iter()
            .take(2)
            .map(|v| {
                let view_from_world = (stage_from_tracking * pose(v.pose).matrix()).inverse();
                projection(v.fov, 0.05, 200.0) * view_from_world
            })
            .collect();
        let target = images
            .get(image)
            .ok_or("swapchain image index")?
            .create_view(&wgpu::TextureViewDescriptor {
                dimension: Some(wgpu::TextureViewDimension::D2Array),
                array_layer_count: Some(2),
                ..Default::default()
            });
        renderer.render_into(&target, &clips, &drawn, &overlays);
        swapchain.release_image().map_err(err("release"))?;
        let rect = xr::Rect2Di {
            offset: xr::Offset2Di { x: 0, y: 0 },
            extent: xr::Extent2Di {
                width: width as i32,
                height: height as i32,
            },
        };
        let layer_views: Vec<xr::CompositionLayerProjectionView<'_, xr::Vulkan>> = located
            .iter()
            .take(2)
            .zip(0u32..)
            .map(|(v, eye)| {
                xr::CompositionLayerProjectionView::new()
                    .pose(v.pose)
                    .fov(v.fov)
                    .sub_image(
                        xr::SwapchainSubImage::new()
                            .swapchain(&swapchain)
                            .image_array_index(eye)
                            .image_rect(rect),
                    )
            })
            .collect();
        stream
            .end(
                t,
                blend,
                &[&xr::CompositionLayerProjection::new()
                    .space(&stage)
                    .views(&layer_views)],
            )
            .map_err(err("end frame"))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symmetric_runtime_fov_gives_the_simulator_projection() {
        let half = 40f32.to_radians();
        let fov = xr::Fovf {
            angle_left: -half,
            angle_right: half,
            angle_up: half,
            angle_down: -half,
        };
        let a = projection(fov, 0.05, 200.0);
        let b = crate::sim::perspective(2.0 * half, 1.0, 0.05, 200.0);
        assert!(a.abs_diff_eq(b, 1e-5), "{a} vs {b}");
    }

    #[test]
    fn an_asymmetric_fov_shifts_the_centre_towards_the_nose() {
        // A left eye looks further left than right: a point straight ahead lands right of centre.
        let fov = xr::Fovf {
            angle_left: -0.9,
            angle_right: 0.7,
            angle_up: 0.8,
            angle_down: -0.8,
        };
        let clip = projection(fov, 0.05, 200.0) * Vec4::new(0.0, 0.0, -1.0, 1.0);
        assert!(clip.x / clip.w > 0.0);
        let depth = clip.z / clip.w;
        assert!((0.0..=1.0).contains(&depth), "wgpu depth range: {depth}");
    }
}
