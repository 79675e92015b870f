//! `meshwork-quest`: the native headset client. One app loop ([`app::App`]) with two front
//! ends: the headset through OpenXR ([`xr`]) and a simulated headset ([`sim`]) driven by a
//! script, rendering offscreen with wgpu ([`render`]) — so everything but the headset itself is
//! exercised on machines without one. Input mapping is pure math ([`input`]); the network is a
//! QUIC thread pinned to the certificate in the invite ([`net`]).

pub mod app;
pub mod input;
pub mod net;
pub mod render;
pub mod sim;
pub mod xr;

#[cfg(target_os = "android")]
mod android;
