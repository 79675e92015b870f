//! Identities and ordering: the newtypes every other module speaks in, the total order of
//! commands and the Lamport clock that produces it.
//!
//! Invariant: `CommandId` order is `(lamport, author)` lexicographic and is the one order every
//! replica applies entries in. Nothing else (arrival order, wall clock) may influence it.

use core::fmt;

use serde::{Deserialize, Serialize};

/// A collaborative session (one authoritative log). 128 random bits chosen by the server, so a
/// signature bound to one session can never be replayed into another.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SessionId(pub [u8; 16]);

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({self})")
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A participant of a session, assigned by the server at join. Each author has one registered
/// public key per session.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct AuthorId(pub u32);

impl fmt::Display for AuthorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "author#{}", self.0)
    }
}

/// A scene entity. The high 32 bits are the author that spawned it and the low 32 bits that
/// author's own counter, so clients mint ids without a round trip and never collide; the session
/// refuses a spawn whose id is in another author's namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EntityId(pub u64);

impl EntityId {
    /// The id `counter` in `author`'s namespace.
    #[must_use]
    pub const fn new(author: AuthorId, counter: u32) -> Self {
        Self(((author.0 as u64) << 32) | counter as u64)
    }

    /// The author whose namespace this id is in.
    #[must_use]
    #[allow(clippy::cast_possible_truncation)] // reason: the shift leaves exactly 32 bits
    pub const fn namespace(self) -> AuthorId {
        AuthorId((self.0 >> 32) as u32)
    }

    /// Its counter within the namespace.
    #[must_use]
    #[allow(clippy::cast_possible_truncation)] // reason: the low 32 bits, by design
    pub const fn counter(self) -> u32 {
        self.0 as u32
    }
}

impl fmt::Display for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "entity#{:x}", self.0)
    }
}

/// An editor tool (select, move, extrude, ...). Tool state is per author.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ToolId(pub u16);

/// The position of a command in the total order: Lamport time first, author as tie-break.
///
/// Field order matters: the derived `Ord` is lexicographic over `(lamport, author)`.
///
/// Packed to 4-byte alignment: 12 bytes instead of 16 (no tail padding), so a mesh element id
/// (a `CommandId` and a `u32`) is 16 bytes, not 24, and the id-keyed maps of an edited mesh
/// move a third less memory. The encoding is unchanged (serde writes the fields in order);
/// read the fields by value (`{ id.lamport }`), since a reference to a packed field may be
/// unaligned.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[repr(C, packed(4))]
pub struct CommandId {
    /// Lamport timestamp the author stamped (and signed).
    pub lamport: u64,
    /// The author; breaks ties between equal timestamps.
    pub author: AuthorId,
}

const _: () = assert!(size_of::<CommandId>() == 12);

impl CommandId {
    /// The smallest id with the given Lamport time (useful as a range bound).
    #[must_use]
    pub const fn first_at(lamport: u64) -> Self {
        Self {
            lamport,
            author: AuthorId(0),
        }
    }
}

impl fmt::Display for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", { self.author }, { self.lamport })
    }
}

/// A Lamport clock. `tick` for a local event, `observe` when integrating a remote timestamp.
///
/// Saturates at `u64::MAX` instead of wrapping; the session refuses timestamps far ahead of its
/// own clock, so saturation is unreachable from the network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LamportClock {
    now: u64,
}

impl LamportClock {
    /// A clock that has seen nothing.
    #[must_use]
    pub const fn new() -> Self {
        Self { now: 0 }
    }

    /// The current time: the largest timestamp issued or observed, plus the advances.
    #[must_use]
    pub const fn now(&self) -> u64 {
        self.now
    }

    /// Local event: advance by one and return the new timestamp.
    pub fn tick(&mut self) -> u64 {
        self.now = self.now.saturating_add(1);
        self.now
    }

    /// Remote event carrying `remote`: the clock becomes `max(local, remote) + 1`.
    pub fn observe(&mut self, remote: u64) -> u64 {
        self.now = self.now.max(remote).saturating_add(1);
        self.now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_advances_by_one() {
        let mut c = LamportClock::new();
        assert_eq!(c.tick(), 1);
        assert_eq!(c.tick(), 2);
        assert_eq!(c.now(), 2);
    }

    #[test]
    fn observe_takes_max_plus_one() {
        let mut c = LamportClock::new();
        c.tick();
        assert_eq!(c.observe(10), 11, "remote ahead: jump past it");
        assert_eq!(c.observe(3), 12, "remote behind: still advance");
        assert_eq!(c.tick(), 13);
    }

    #[test]
    fn clock_saturates_instead_of_wrapping() {
        let mut c = LamportClock::new();
        assert_eq!(c.observe(u64::MAX), u64::MAX);
        assert_eq!(c.tick(), u64::MAX);
    }

    #[test]
    fn command_ids_order_by_lamport_then_author() {
        let a = CommandId {
            lamport: 5,
            author: AuthorId(9),
        };
        let b = CommandId {
            lamport: 6,
            author: AuthorId(1),
        };
        let c = CommandId {
            lamport: 6,
            author: AuthorId(2),
        };
        assert!(a < b && b < c);
        let mut v = vec![c, a, b];
        v.sort();
        assert_eq!(v, vec![a, b, c]);
    }

    #[test]
    fn entity_ids_carry_their_author_namespace() {
        let id = EntityId::new(AuthorId(7), 42);
        assert_eq!(id.namespace(), AuthorId(7));
        assert_eq!(id.0 & 0xffff_ffff, 42);
    }
}
