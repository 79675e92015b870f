//! `meshwork-quest`: the native headset client. One app loop ([`app::App`]) with two front
//! ends: the headset through OpenXR ([`xr`]) and a simulated headset ([`sim`]) driven by a
//! script, rendering offscreen with wgpu ([`render`]) — so everything but the headset itself is
//! exercised on machines without one. Input mapping is pure math ([`input`]); the network is a
//! QUIC thread pinned to the certificate in the invite ([`net`]).

// Geometry is glam float math (vectors, quaternions, matrices): there is no integer overflow to
// guard there, and the few integer operations index two hands or a non-empty palette.
#![allow(
    clippy::arithmetic_side_effects,
    reason = "glam float math; integer uses are hand indices 0/1 and modulo a non-empty palette"
)]

pub mod app;
pub mod headset;
pub mod input;
pub mod net;
pub mod pump;
pub mod render;
pub mod sim;
pub mod ui;
pub mod xr;

#[cfg(target_os = "android")]
mod android;
