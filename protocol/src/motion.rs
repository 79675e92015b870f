//! The compact form of the presence lane: one [`Motion`] carries a member's head, hands and
//! cursor and the entities they are dragging, bit-packed (smallest-three rotations, positions
//! relative to a spatial cell, hands relative to the head, entity ids as two short varints).
//! A head costs 10 bytes, head and both hands 24, a dragged entity 12 (while its author id is
//! below 128 and its counter below 128; one byte more per further 7 bits).
//!
//! It carries what [`Presence`] and [`Preview`] carry, at the precision a viewer sees; a
//! receiver turns it back into those messages ([`MotionOf::expand`]) and handles them as
//! before. Nothing here touches the replica: like presence, motion is never logged.
//!
//! Everything is integer arithmetic except the rotation's square root, which IEEE 754 rounds
//! the same way natively and in wasm, so a motion decodes to the same values everywhere.

#![allow(
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap,
    clippy::cast_precision_loss,
    reason = "fixed-width bit packing: every packed field is masked or clamped to its width \
              before a cast, shifts stay below 128, and positions are i32 millimetres widened \
              to i64 (offsets of at most 2^14 units of at most 64 mm) so no sum can overflow"
)]

use alloc::vec::Vec;

use glam::{Quat, Vec3};
use serde::{Deserialize, Serialize};

use crate::ids::{AuthorId, EntityId};
use crate::wire::{Pose, Presence, PresenceOf, Preview, PreviewOf, PreviewTransform, ServerMsg};

/// The edge of a spatial cell, in millimetres (16.384 m). Positions travel relative to the
/// centre of the message's anchor cell.
pub const CELL_MM: i32 = 16_384;

/// Most entities one motion may carry (dragged and ended together).
pub const MAX_MOTION_ENTITIES: usize = 64;

/// Bits per packed rotation component: full poses (head, cursor, dragged entities).
const ROTATION_BITS: u32 = 10;
/// Bits per packed rotation component of a hand (relative to the head).
const HAND_ROTATION_BITS: u32 = 8;
/// Bits per position axis of a full pose (two's complement, in units of `4^exponent` mm).
const POSITION_BITS: u32 = 15;
/// Bits per position axis of a hand, in [`HAND_UNIT_MM`] steps from the head.
const HAND_POSITION_BITS: u32 = 10;
/// A hand's position step: 4 mm, so a hand reaches ±2.044 m from the head.
const HAND_UNIT_MM: i64 = 4;
/// Bytes of a full pose block.
const BLOCK_BYTES: usize = 10;
/// Bytes of a hand block.
const HAND_BYTES: usize = 7;

const PART_PRESENCE: u8 = 1;
const PART_HEAD: u8 = 1 << 1;
const PART_LEFT: u8 = 1 << 2;
const PART_RIGHT: u8 = 1 << 3;
const PART_CURSOR: u8 = 1 << 4;
const PART_ENTITIES: u8 = 1 << 5;
const PART_FIGURE: u8 = PART_HEAD | PART_LEFT | PART_RIGHT | PART_CURSOR;
const PART_KNOWN: u8 = PART_PRESENCE | PART_FIGURE | PART_ENTITIES;

/// A compact presence and preview update, as it travels (`ClientMsg::Motion`): the packed
/// bytes, laid out as `docs/protocol.md` §8 says. Unsigned, latest-wins by `seq`, never logged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Motion {
    /// The packed update.
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

/// A motion relayed to the other members (`ServerMsg::Motion`), its bytes as they came.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MotionOf {
    /// Whose.
    pub author: AuthorId,
    /// The update.
    pub motion: Motion,
}

/// A member's tracked body, as a presence update replaces it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Figure {
    /// Head pose, if tracked.
    pub head: Option<Pose>,
    /// Hand / controller poses (left, right).
    pub hands: [Option<Pose>; 2],
    /// A pointer hit or cursor in scene space.
    pub cursor: Option<Pose>,
}

/// What a [`Motion`] says, at the wire's presence precision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MotionContent {
    /// The sender's presence sequence number, modulo 2^16 (see [`unwrap_seq`]).
    pub seq: u16,
    /// A presence update: replaces what others show of the sender. `None` leaves it.
    pub figure: Option<Figure>,
    /// Entities being dragged, and where they are now.
    pub moving: Vec<(EntityId, PreviewTransform)>,
    /// Entities whose drag ended (released or cancelled).
    pub ended: Vec<EntityId>,
}

/// Why bytes are not a motion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MotionError {
    /// The bytes end inside a field.
    #[error("motion ends inside a field")]
    Truncated,
    /// Bytes follow the last field.
    #[error("{0} bytes after the motion")]
    TrailingBytes(usize),
    /// A part bit this version does not know is set.
    #[error("unknown motion part bits {0:#04x}")]
    UnknownParts(u8),
    /// More entities than [`MAX_MOTION_ENTITIES`].
    #[error("motion names {0} entities (at most 64)")]
    TooManyEntities(usize),
    /// The content cannot be encoded (more entities than allowed).
    #[error("motion too large to encode")]
    TooLarge,
}

/// The `u32` sequence number nearest to `last` whose low 16 bits are `seq`: how a receiver
/// orders motions (which carry 16 bits) against the connection's other presence updates.
#[must_use]
pub fn unwrap_seq(last: u32, seq: u16) -> u32 {
    // The signed 16-bit step from `last` to `seq`, taken from `last` in 32 bits.
    let step = i32::from(seq.wrapping_sub(last as u16) as i16);
    last.wrapping_add_signed(step)
}

/// The low 16 bits of a connection's presence sequence number: what a motion carries.
#[must_use]
pub const fn low_seq(seq: u32) -> u16 {
    (seq & 0xffff) as u16
}

/// The cell holding a position (floor division per axis).
fn cell_of(position_mm: [i32; 3]) -> [i32; 3] {
    position_mm.map(|v| v.div_euclid(CELL_MM))
}

fn center_of(cell: [i32; 3]) -> [i64; 3] {
    cell.map(|c| i64::from(c) * i64::from(CELL_MM) + i64::from(CELL_MM / 2))
}

/// `value / unit` rounded half away from zero.
fn div_round(value: i64, unit: i64) -> i64 {
    let half = unit / 2;
    if value >= 0 {
        (value + half) / unit
    } else {
        (value - half) / unit
    }
}

/// The smallest-three form of a rotation: the index of the largest component (2 bits), then
/// the other three, each in `bits` bits, scaled from ±1/√2. Zero is exact (steps are
/// symmetric around it), so the identity travels as the identity.
fn pack_rotation(q: Quat, bits: u32) -> u64 {
    let c = [q.x, q.y, q.z, q.w];
    let mut largest = 0usize;
    for (i, v) in c.iter().enumerate().skip(1) {
        if v.abs() > c[largest].abs() {
            largest = i;
        }
    }
    let sign = if c[largest] < 0.0 { -1.0 } else { 1.0 };
    let half = (1i32 << (bits - 1)) - 1;
    let mut packed = largest as u64;
    let mut shift = 2;
    for (i, v) in c.iter().enumerate() {
        if i == largest {
            continue;
        }
        let scaled = (v * sign * core::f32::consts::SQRT_2).clamp(-1.0, 1.0);
        let step = (scaled * half as f32).round();
        let n = if step.is_nan() {
            half
        } else {
            step as i32 + half
        };
        packed |= (n as u64) << shift;
        shift += bits;
    }
    packed
}

fn unpack_rotation(packed: u64, bits: u32) -> Quat {
    let largest = (packed & 3) as usize;
    let half = (1i32 << (bits - 1)) - 1;
    let mask = (1u64 << bits) - 1;
    let mut c = [0.0f32; 4];
    let mut shift = 2;
    let mut sum = 0.0f32;
    for (i, slot) in c.iter_mut().enumerate() {
        if i == largest {
            continue;
        }
        let n = (((packed >> shift) & mask) as i32).min(2 * half) - half;
        let v = n as f32 / half as f32 * core::f32::consts::FRAC_1_SQRT_2;
        *slot = v;
        sum += v * v;
        shift += bits;
    }
    c[largest] = (1.0 - sum).max(0.0).sqrt();
    let q = Quat::from_xyzw(c[0], c[1], c[2], c[3]);
    if q.length_squared() > 1e-6 {
        q.normalize()
    } else {
        Quat::IDENTITY
    }
}

/// The wire pose's rotation in its own 1/32767 steps.
fn wire_rotation(q: Quat) -> [i16; 4] {
    Pose::quantize(Vec3::ZERO, q).rotation
}

fn sign_extend(v: u128, bits: u32) -> i64 {
    let shift = 64 - bits;
    ((v as u64) << shift) as i64 >> shift
}

/// A full pose block (10 bytes, little-endian bit order): rotation (2 + 3 × 10 bits),
/// a scale exponent `e` (2 bits), the position as three 15-bit offsets from the anchor cell's
/// centre in units of `4^e` mm (±16.4 m at 1 mm, up to ±1 km at 64 mm; farther is clamped),
/// and one flag bit whose meaning is the caller's.
fn put_block(out: &mut Vec<u8>, anchor: [i32; 3], pose: &Pose, flag: bool) {
    let center = center_of(anchor);
    let relative: [i64; 3] = core::array::from_fn(|i| i64::from(pose.position_mm[i]) - center[i]);
    let limit = (1i64 << (POSITION_BITS - 1)) - 1;
    let mut exponent = 0u32;
    let mut offsets = [0i64; 3];
    while exponent < 4 {
        let unit = 1i64 << (2 * exponent);
        offsets = relative.map(|v| div_round(v, unit));
        if offsets.iter().all(|o| o.abs() <= limit) {
            break;
        }
        exponent += 1;
    }
    let offsets = offsets.map(|o| o.clamp(-limit, limit));
    let mask = (1u128 << POSITION_BITS) - 1;
    let mut bits = u128::from(pack_rotation(pose.rotation_q(), ROTATION_BITS));
    bits |= u128::from(exponent.min(3)) << 32;
    for (i, o) in offsets.iter().enumerate() {
        bits |= ((*o as u128) & mask) << (34 + POSITION_BITS as usize * i);
    }
    bits |= u128::from(flag) << 79;
    out.extend_from_slice(&bits.to_le_bytes()[..BLOCK_BYTES]);
}

fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], MotionError> {
    if bytes.len() < n {
        return Err(MotionError::Truncated);
    }
    let (head, rest) = bytes.split_at(n);
    *bytes = rest;
    Ok(head)
}

fn take_block(bytes: &mut &[u8], anchor: [i32; 3]) -> Result<(Pose, bool), MotionError> {
    let mut raw = [0u8; 16];
    raw[..BLOCK_BYTES].copy_from_slice(take(bytes, BLOCK_BYTES)?);
    let bits = u128::from_le_bytes(raw);
    let rotation = unpack_rotation((bits & 0xffff_ffff) as u64, ROTATION_BITS);
    let unit = 1i64 << (2 * ((bits >> 32) & 3) as u32);
    let mask = (1u128 << POSITION_BITS) - 1;
    let center = center_of(anchor);
    let position_mm = core::array::from_fn(|i| {
        let offset = sign_extend(
            (bits >> (34 + POSITION_BITS as usize * i)) & mask,
            POSITION_BITS,
        );
        (center[i] + offset * unit).clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
    });
    let pose = Pose {
        position_mm,
        rotation: wire_rotation(rotation),
    };
    Ok((pose, (bits >> 79) & 1 == 1))
}

/// A hand block (7 bytes): rotation (2 + 3 × 8 bits), then three 10-bit offsets from the head
/// in 4 mm steps (clamped to ±2.044 m: a hand is within reach).
fn put_hand(out: &mut Vec<u8>, head: &Pose, hand: &Pose) {
    let limit = (1i64 << (HAND_POSITION_BITS - 1)) - 1;
    let mask = (1u64 << HAND_POSITION_BITS) - 1;
    let mut bits = pack_rotation(hand.rotation_q(), HAND_ROTATION_BITS);
    for i in 0..3 {
        let relative = i64::from(hand.position_mm[i]) - i64::from(head.position_mm[i]);
        let offset = div_round(relative, HAND_UNIT_MM).clamp(-limit, limit);
        bits |= ((offset as u64) & mask) << (26 + HAND_POSITION_BITS as usize * i);
    }
    out.extend_from_slice(&bits.to_le_bytes()[..HAND_BYTES]);
}

fn take_hand(bytes: &mut &[u8], head: &Pose) -> Result<Pose, MotionError> {
    let mut raw = [0u8; 8];
    raw[..HAND_BYTES].copy_from_slice(take(bytes, HAND_BYTES)?);
    let bits = u64::from_le_bytes(raw);
    let rotation = unpack_rotation(bits & ((1 << 26) - 1), HAND_ROTATION_BITS);
    let mask = (1u64 << HAND_POSITION_BITS) - 1;
    let position_mm = core::array::from_fn(|i| {
        let field = (bits >> (26 + HAND_POSITION_BITS as usize * i)) & mask;
        let offset = sign_extend(u128::from(field), HAND_POSITION_BITS) * HAND_UNIT_MM;
        (i64::from(head.position_mm[i]) + offset).clamp(i64::from(i32::MIN), i64::from(i32::MAX))
            as i32
    });
    Ok(Pose {
        position_mm,
        rotation: wire_rotation(rotation),
    })
}

fn put_varint<T: Serialize>(out: &mut Vec<u8>, value: T) {
    // postcard writes integers as (zigzag) LEB128 varints, at most 5 bytes for 32 bits.
    let mut buf = [0u8; 5];
    if let Ok(used) = postcard::to_slice(&value, &mut buf) {
        out.extend_from_slice(used);
    }
}

fn take_varint<T: serde::de::DeserializeOwned>(bytes: &mut &[u8]) -> Result<T, MotionError> {
    let (value, rest) =
        postcard::take_from_bytes::<T>(bytes).map_err(|_| MotionError::Truncated)?;
    *bytes = rest;
    Ok(value)
}

fn put_entity(out: &mut Vec<u8>, entity: EntityId) {
    put_varint(out, entity.namespace().0);
    put_varint(out, entity.counter());
}

fn take_entity(bytes: &mut &[u8]) -> Result<EntityId, MotionError> {
    let namespace: u32 = take_varint(bytes)?;
    let counter: u32 = take_varint(bytes)?;
    Ok(EntityId::new(AuthorId(namespace), counter))
}

impl MotionContent {
    /// Transform previews alone: each entity where it is now, or `None` when its drag ended.
    #[must_use]
    pub fn previews(
        seq: u16,
        previews: impl IntoIterator<Item = (EntityId, Option<PreviewTransform>)>,
    ) -> Self {
        let mut content = Self {
            seq,
            ..Self::default()
        };
        for (entity, transform) in previews {
            match transform {
                Some(t) => content.moving.push((entity, t)),
                None => content.ended.push(entity),
            }
        }
        content
    }
}

impl Motion {
    /// Packs `content`. The anchor cell is the head's, else the cursor's, else the first
    /// hand's, else the first dragged entity's.
    ///
    /// # Errors
    /// [`MotionError::TooLarge`] for more than [`MAX_MOTION_ENTITIES`] entities.
    pub fn encode(content: &MotionContent) -> Result<Self, MotionError> {
        if content.moving.len() + content.ended.len() > MAX_MOTION_ENTITIES {
            return Err(MotionError::TooLarge);
        }
        Ok(Self::pack(content))
    }

    /// A presence update alone (always packs).
    #[must_use]
    pub fn of_figure(seq: u16, figure: Figure) -> Self {
        Self::pack(&MotionContent {
            seq,
            figure: Some(figure),
            ..MotionContent::default()
        })
    }

    fn pack(content: &MotionContent) -> Self {
        let figure = content.figure.unwrap_or_default();
        let anchor_pose = figure
            .head
            .or(figure.cursor)
            .or(figure.hands[0])
            .or(figure.hands[1])
            .or_else(|| content.moving.first().map(|(_, t)| t.pose));
        let anchor = anchor_pose.map_or([0; 3], |p| cell_of(p.position_mm));
        let mut parts = 0u8;
        if content.figure.is_some() {
            parts |= PART_PRESENCE;
            for (present, bit) in [
                (figure.head.is_some(), PART_HEAD),
                (figure.hands[0].is_some(), PART_LEFT),
                (figure.hands[1].is_some(), PART_RIGHT),
                (figure.cursor.is_some(), PART_CURSOR),
            ] {
                if present {
                    parts |= bit;
                }
            }
        }
        if !content.moving.is_empty() || !content.ended.is_empty() {
            parts |= PART_ENTITIES;
        }
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&content.seq.to_le_bytes());
        out.push(parts);
        for axis in anchor {
            put_varint(&mut out, axis);
        }
        if let Some(head) = &figure.head {
            put_block(&mut out, anchor, head, false);
        }
        for hand in figure.hands.iter().flatten() {
            match &figure.head {
                Some(head) => put_hand(&mut out, head, hand),
                None => put_block(&mut out, anchor, hand, false),
            }
        }
        if let Some(cursor) = &figure.cursor {
            put_block(&mut out, anchor, cursor, false);
        }
        if parts & PART_ENTITIES != 0 {
            put_varint(&mut out, content.moving.len() as u32);
            for (entity, transform) in &content.moving {
                put_entity(&mut out, *entity);
                let scaled = transform.scale_permille != [1000; 3];
                put_block(&mut out, anchor, &transform.pose, scaled);
                if scaled {
                    for axis in transform.scale_permille {
                        put_varint(&mut out, axis);
                    }
                }
            }
            put_varint(&mut out, content.ended.len() as u32);
            for entity in &content.ended {
                put_entity(&mut out, *entity);
            }
        }
        Self { bytes: out }
    }

    /// Unpacks the update.
    ///
    /// # Errors
    /// [`MotionError`] for bytes that are not exactly one motion.
    pub fn decode(&self) -> Result<MotionContent, MotionError> {
        let mut bytes = self.bytes.as_slice();
        let seq = take(&mut bytes, 2)?;
        let seq = u16::from_le_bytes([seq[0], seq[1]]);
        let parts = take(&mut bytes, 1)?[0];
        if parts & !PART_KNOWN != 0 || (parts & PART_PRESENCE == 0 && parts & PART_FIGURE != 0) {
            return Err(MotionError::UnknownParts(parts));
        }
        let anchor = [
            take_varint::<i32>(&mut bytes)?,
            take_varint::<i32>(&mut bytes)?,
            take_varint::<i32>(&mut bytes)?,
        ];
        let mut content = MotionContent {
            seq,
            ..MotionContent::default()
        };
        if parts & PART_PRESENCE != 0 {
            let mut figure = Figure::default();
            if parts & PART_HEAD != 0 {
                figure.head = Some(take_block(&mut bytes, anchor)?.0);
            }
            for (slot, bit) in [(0, PART_LEFT), (1, PART_RIGHT)] {
                if parts & bit != 0 {
                    figure.hands[slot] = Some(match &figure.head {
                        Some(head) => take_hand(&mut bytes, head)?,
                        None => take_block(&mut bytes, anchor)?.0,
                    });
                }
            }
            if parts & PART_CURSOR != 0 {
                figure.cursor = Some(take_block(&mut bytes, anchor)?.0);
            }
            content.figure = Some(figure);
        }
        if parts & PART_ENTITIES != 0 {
            let moving = take_varint::<u32>(&mut bytes)? as usize;
            if moving > MAX_MOTION_ENTITIES {
                return Err(MotionError::TooManyEntities(moving));
            }
            for _ in 0..moving {
                let entity = take_entity(&mut bytes)?;
                let (pose, scaled) = take_block(&mut bytes, anchor)?;
                let scale_permille = if scaled {
                    [
                        take_varint(&mut bytes)?,
                        take_varint(&mut bytes)?,
                        take_varint(&mut bytes)?,
                    ]
                } else {
                    [1000; 3]
                };
                content.moving.push((
                    entity,
                    PreviewTransform {
                        pose,
                        scale_permille,
                    },
                ));
            }
            let ended = take_varint::<u32>(&mut bytes)? as usize;
            if moving + ended > MAX_MOTION_ENTITIES {
                return Err(MotionError::TooManyEntities(moving + ended));
            }
            for _ in 0..ended {
                content.ended.push(take_entity(&mut bytes)?);
            }
        }
        if !bytes.is_empty() {
            return Err(MotionError::TrailingBytes(bytes.len()));
        }
        Ok(content)
    }
}

impl MotionOf {
    /// The relayed update as the messages it stands for: a [`ServerMsg::Presence`] when it
    /// carries presence, then one [`ServerMsg::Preview`] per entity (each with the motion's
    /// sequence number), so receivers handle both forms with one code path.
    ///
    /// # Errors
    /// [`MotionError`] for bytes that are not a motion.
    pub fn expand(&self) -> Result<Vec<ServerMsg>, MotionError> {
        let content = self.motion.decode()?;
        let seq = u32::from(content.seq);
        let author = self.author;
        let mut out = Vec::with_capacity(1 + content.moving.len() + content.ended.len());
        if let Some(f) = content.figure {
            out.push(ServerMsg::Presence(PresenceOf {
                author,
                presence: Presence {
                    seq,
                    head: f.head,
                    hands: f.hands,
                    cursor: f.cursor,
                },
            }));
        }
        let previews = content
            .moving
            .into_iter()
            .map(|(entity, t)| (entity, Some(t)))
            .chain(content.ended.into_iter().map(|entity| (entity, None)));
        for (entity, transform) in previews {
            out.push(ServerMsg::Preview(PreviewOf {
                author,
                preview: Preview {
                    seq,
                    entity,
                    transform,
                },
            }));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
