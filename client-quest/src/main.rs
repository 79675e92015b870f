//! `meshwork-quest`: `sim` runs the simulated headset (headless, scripted), `xr` the headset.

#![allow(
    clippy::arithmetic_side_effects,
    reason = "no arithmetic on untrusted integers here"
)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use meshwork_protocol::Ed25519Signer;
use meshwork_protocol::wire::JoinTicket;
use meshwork_quest::app::App;
use meshwork_quest::net::Net;
use meshwork_quest::render::Renderer;
use meshwork_quest::sim;

/// Meshwork's headset client.
#[derive(Debug, Parser)]
#[command(name = "meshwork-quest", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// The simulated headset: the same app loop driven by a script, rendering offscreen.
    Sim {
        /// Join ticket (`mwj1_…`, from `meshwork-server invite` or the admin API).
        #[arg(long, env = "MESHWORK_TICKET")]
        ticket: String,
        /// Run without a window (the only mode of this build).
        #[arg(long)]
        headless: bool,
        /// The input script (see `meshwork_quest::sim`).
        #[arg(long)]
        script: PathBuf,
        /// Stop with an error if the script needs more frames than this.
        #[arg(long, default_value_t = 5000)]
        frames: u64,
        /// Write the last frame here (PNG).
        #[arg(long)]
        screenshot: Option<PathBuf>,
        /// Write the run's report here (JSON); stdout otherwise.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Render size.
        #[arg(long, default_value_t = 960)]
        width: u32,
        /// Render size.
        #[arg(long, default_value_t = 720)]
        height: u32,
        /// Grid step for snapping, metres (0: off).
        #[arg(long, default_value_t = 0.05)]
        snap: f32,
        /// The name the others see (default: "Quest" and the start of the key's fingerprint).
        #[arg(long, env = "MESHWORK_NAME")]
        name: Option<String>,
    },
    /// The headset through OpenXR (a PC VR runtime; on the Quest the APK's entry does this).
    Xr {
        /// Join ticket.
        #[arg(long, env = "MESHWORK_TICKET")]
        ticket: String,
        /// The name the others see (default: "Quest" and the start of the key's fingerprint).
        #[arg(long, env = "MESHWORK_NAME")]
        name: Option<String>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshwork-quest: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Cmd::Xr { ticket, name } => {
            let ticket = JoinTicket::from_text(ticket.trim()).map_err(|e| e.to_string())?;
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| e.to_string())?;
            meshwork_quest::headset::run(&(), &ticket, seed, name.as_deref())
        }
        Cmd::Sim {
            ticket,
            headless,
            script,
            frames,
            screenshot,
            report,
            width,
            height,
            snap,
            name,
        } => {
            if !headless {
                return Err("this build has no desktop window: pass --headless".into());
            }
            let ticket = JoinTicket::from_text(ticket.trim()).map_err(|e| e.to_string())?;
            let text = std::fs::read_to_string(&script)
                .map_err(|e| format!("{}: {e}", script.display()))?;
            let steps = sim::parse(&text)?;
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| e.to_string())?;
            let signer = Ed25519Signer::from_seed(seed);
            let name = name.unwrap_or_else(|| meshwork_quest::app::default_display_name(&signer));
            let mut app = App::new(signer, ticket.invite.clone(), snap);
            app.set_display_name(&name);
            let net = Net::connect(&ticket)?;
            let mut renderer = Renderer::headless(width, height).map_err(|e| e.to_string())?;
            let result = sim::run(&mut app, &net, &mut renderer, &steps, frames)?;
            if let Some(path) = screenshot {
                renderer.save_png(&path)?;
            }
            let json = serde_json::to_string_pretty(&result).map_err(|e| e.to_string())?;
            match report {
                Some(path) => {
                    std::fs::write(&path, json).map_err(|e| format!("{}: {e}", path.display()))?
                }
                None => println!("{json}"),
            }
            Ok(())
        }
    }
}
