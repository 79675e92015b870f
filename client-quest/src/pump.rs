//! The frame pump the headset and the simulator share: the network in, the app's frame, the
//! network out (the reliable lane; presence and previews on the unreliable lane every other
//! frame, 36–45 updates a second at 72–90 fps, under the server's 90 a second), the draw list,
//! and the panel image when what it shows changed. Only the devices and the render target differ.

use glam::Mat4;

use crate::app::{App, FrameInput, FrameOutput};
use crate::net::{Net, NetEvent};
use crate::sim::OwnedItem;
use crate::ui::Image;

/// The pump's own state across frames.
#[derive(Debug, Default)]
pub struct Pump {
    frames: u64,
    panel_key: String,
}

/// What one frame produced.
#[derive(Debug)]
pub struct Pumped {
    /// What the app asks of the platform (haptics, snap turn, vignette).
    pub out: FrameOutput,
    /// `clip_from_world` of a single view (the simulator's; the headset has its own per eye).
    pub clip: Mat4,
    /// What to draw.
    pub items: Vec<OwnedItem>,
    /// The panel image, when it changed.
    pub panel: Option<Image>,
}

impl Pump {
    /// A pump at frame zero.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Frames pumped so far.
    #[must_use]
    pub const fn frames(&self) -> u64 {
        self.frames
    }

    /// Every message received since the last call, into the app.
    ///
    /// # Errors
    /// The connection closed (with why).
    pub fn receive(app: &mut App, net: &Net) -> Result<(), String> {
        for ev in net.poll() {
            match ev {
                NetEvent::Msg(m) => {
                    app.receive(&m);
                }
                NetEvent::Dropped(why) if app.closed_for_good() => {
                    return Err(format!("connection closed: {why}"));
                }
                NetEvent::Dropped(why) => {
                    // Keep editing: the app signs and keeps edits until the network thread is
                    // connected again; the new connection starts with the app's new Hello.
                    net.restart();
                    app.reconnect(&why);
                }
                NetEvent::Closed(why) => return Err(format!("connection closed: {why}")),
            }
        }
        Ok(())
    }

    /// One frame: the app's frame for `input`, the messages out, the draw list for a view of
    /// `size`, the panel if it changed.
    pub fn frame(
        &mut self,
        app: &mut App,
        net: &Net,
        input: &FrameInput,
        size: (u32, u32),
    ) -> Pumped {
        self.frames = self.frames.saturating_add(1);
        let out = app.frame(input);
        for m in app.poll_transmit() {
            net.send(&m);
        }
        // Presence only on a joined connection: while reconnecting it would pile up for the
        // next one.
        if app.live() && app.connection().is_joined() && self.frames.is_multiple_of(2) {
            net.send_datagram(&app.presence(input));
            for m in app.previews_out() {
                net.send_datagram(&m);
            }
        }
        let (clip, items) = crate::sim::draw_list(app, input, size);
        let view = crate::ui::PanelView::of(app);
        let key = format!("{view:?}");
        let panel = (key != self.panel_key).then(|| {
            self.panel_key = key;
            crate::ui::draw(&view)
        });
        Pumped {
            out,
            clip,
            items,
            panel,
        }
    }
}
