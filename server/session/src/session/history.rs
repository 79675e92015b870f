//! The session's history as members read it: who did what, when (server time), to which
//! entities and elements, whether it is undone, and who last changed an entity or element.
//! Paged, newest first, from the durable scene's undo history.

use meshwork_protocol::editmesh::ElementId;
use meshwork_protocol::history::Step;
use meshwork_protocol::{CommandId, EntityId};
use serde::Serialize;

use super::Session;

/// Most steps one page holds.
pub const MAX_HISTORY_PAGE: usize = 200;

/// What a reader asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Only steps with a serial below this (the previous page's `next_before`).
    pub before: Option<u64>,
    /// Most steps wanted (at most [`MAX_HISTORY_PAGE`]).
    pub limit: usize,
    /// Only steps that changed this entity.
    pub entity: Option<EntityId>,
    /// Only steps that changed this element of `entity`.
    pub element: Option<ElementId>,
}

/// One step as the history lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HistoryStep {
    /// Its place among the session's steps (paging cursor).
    pub serial: u64,
    /// The step's id as undo names it: its first entry's Lamport time and author.
    pub lamport: u64,
    /// Who made it.
    pub author: u32,
    /// What the user did.
    pub label: String,
    /// Server time its first entry became durable (Unix ms). For a step from before the server
    /// process started, the time of the signed checkpoint that first covered it (the store
    /// keeps no time per entry; checkpoints come every 10 s or 1000 entries by default), with
    /// `at_checkpoint` set; `None` when no checkpoint covers it.
    pub at_ms: Option<u64>,
    /// `at_ms` is a checkpoint's time (durable by then), not the entry's own.
    pub at_checkpoint: bool,
    /// Its entries' kinds, in order (repeated kinds once).
    pub kinds: Vec<&'static str>,
    /// How many entries it has.
    pub entries: usize,
    /// The entities it changed.
    pub entities: Vec<u64>,
    /// Mesh vertices and faces it named.
    pub elements: usize,
    /// It is undone now.
    pub undone: bool,
    /// Its author may redo it.
    pub redoable: bool,
}

/// One page of the history.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HistoryPage {
    /// Newest first.
    pub steps: Vec<HistoryStep>,
    /// Pass as `before` for the next (older) page; `None` on the last page.
    pub next_before: Option<u64>,
    /// With an entity (and element) filter: the latest step in force that changed it — who last
    /// changed this.
    pub last_change: Option<HistoryStep>,
    /// Steps kept in all (older ones are gone: at most 128 per author).
    pub kept: usize,
}

impl Session {
    /// A page of the history (see [`HistoryQuery`]).
    #[must_use]
    pub fn history_page(&self, q: &HistoryQuery) -> HistoryPage {
        let Some(history) = self.scene().history() else {
            return HistoryPage::default();
        };
        let matches = |s: &&Step| match (q.entity, q.element) {
            (Some(e), Some(el)) => s.touches_element(e, el),
            (Some(e), None) => s.changes.contains_key(&e),
            _ => true,
        };
        let limit = q.limit.clamp(1, MAX_HISTORY_PAGE);
        let mut picked = history
            .steps()
            .rev()
            .filter(|s| q.before.is_none_or(|b| s.serial < b))
            .filter(matches);
        let steps: Vec<HistoryStep> = picked
            .by_ref()
            .take(limit)
            .map(|s| self.listed(s))
            .collect();
        let next_before = picked.next().and(steps.last().map(|s| s.serial));
        let last_change = q.entity.and_then(|_| {
            history
                .steps()
                .filter(matches)
                .filter(|s| s.undone_by.is_none())
                .max_by_key(|s| s.serial)
                .map(|s| self.listed(s))
        });
        HistoryPage {
            steps,
            next_before,
            last_change,
            kept: history.steps().len(),
        }
    }

    fn listed(&self, s: &Step) -> HistoryStep {
        let mut kinds: Vec<&'static str> = Vec::new();
        for (_, k) in &s.entries {
            if kinds.last() != Some(&k.as_str()) {
                kinds.push(k.as_str());
            }
        }
        let at = s
            .entries
            .first()
            .and_then(|(id, _)| self.entry_ms.get(id).copied());
        HistoryStep {
            serial: s.serial,
            lamport: { s.id.lamport },
            author: { s.author.0 },
            label: s.label.clone(),
            at_ms: at.map(|(ms, _)| ms),
            at_checkpoint: at.is_some_and(|(_, exact)| !exact),
            kinds,
            entries: s.entries.len(),
            entities: s.changes.keys().map(|e| e.0).collect(),
            elements: s.elements(),
            undone: s.undone_by.is_some(),
            redoable: s.redoable,
        }
    }

    /// Notes when an entry became durable, for the history's times (bounded: the oldest go).
    pub(super) fn note_time(&mut self, id: CommandId, now_ms: u64) {
        self.note(id, now_ms, true);
    }

    /// After a restore: the times of stored entries from the store's checkpoints (`position`,
    /// `at_ms`, in position order): each entry gets the time of the first checkpoint at or past
    /// its position (durable by then). `ids` are stored entries' ids in acceptance order, the
    /// first at position `first` (1-based); only the last [`ENTRY_TIMES`] count.
    pub fn note_checkpoint_times(
        &mut self,
        first: u64,
        ids: &[CommandId],
        checkpoints: &[(u64, u64)],
    ) {
        let mut cp = checkpoints.iter().peekable();
        let skip = ids.len().saturating_sub(ENTRY_TIMES);
        for (i, id) in ids.iter().enumerate().skip(skip) {
            let position = u64::try_from(i).unwrap_or(u64::MAX).saturating_add(first);
            while cp.next_if(|(p, _)| *p < position).is_some() {}
            let Some((_, at)) = cp.peek() else {
                break;
            };
            self.note(*id, *at, false);
        }
    }

    fn note(&mut self, id: CommandId, ms: u64, exact: bool) {
        self.entry_ms.insert(id, (ms, exact));
        while self.entry_ms.len() > ENTRY_TIMES {
            self.entry_ms.pop_first();
        }
    }
}

/// Entry times kept (far more than the steps the history keeps).
pub const ENTRY_TIMES: usize = 1 << 16;
