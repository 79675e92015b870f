use alloc::vec;

use glam::{Quat, Vec3};
use proptest::prelude::*;

use super::*;
use crate::codec::decode_payload;
use crate::wire::ClientMsg;

fn pose(x: f32, y: f32, z: f32, rotation: Quat) -> Pose {
    Pose::quantize(Vec3::new(x, y, z), rotation)
}

fn turn(axis: Vec3, degrees: f32) -> Quat {
    Quat::from_axis_angle(axis.normalize(), degrees.to_radians())
}

/// The largest angle, in radians, between a rotation and its smallest-three form with `bits`
/// per component. Each of the three sent components is off by at most half a step
/// `h = (1/√2) / (2^(bits-1) - 1)`, so together by `|e| ≤ √3·h/2`; the rebuilt largest component
/// (at least 1/2) moves by at most `√3·|e|` more, so the quaternion moves by `≤ 2|e|` and the
/// rotation by twice that: `√6 / (2^(bits-1) - 1)`, plus the wire pose's own 1/32767 steps.
fn rotation_bound(bits: u32) -> f32 {
    let half = ((1u32 << (bits - 1)) - 1) as f32;
    6f32.sqrt() / half + 2.0 / 32767.0
}

/// Largest position error per axis in mm, and the angle between the rotations in radians.
fn error(a: &Pose, b: &Pose) -> (i64, f32) {
    let distance = (0..3)
        .map(|i| (i64::from(a.position_mm[i]) - i64::from(b.position_mm[i])).abs())
        .max()
        .unwrap_or(0);
    (distance, a.rotation_q().angle_between(b.rotation_q()))
}

fn headset() -> Figure {
    Figure {
        head: Some(pose(
            1.234,
            1.71,
            -0.456,
            turn(Vec3::new(0.2, 1.0, 0.1), 37.0),
        )),
        hands: [
            Some(pose(1.0, 1.2, -0.8, turn(Vec3::new(1.0, 0.3, 0.0), -70.0))),
            Some(pose(1.5, 1.25, -0.7, turn(Vec3::new(0.0, 0.4, 1.0), 120.0))),
        ],
        cursor: None,
    }
}

/// The bytes after the fixed header (seq, parts, one-byte anchor varints).
fn body_len(motion: &Motion) -> usize {
    motion.bytes.len() - 2 - 1 - 3
}

#[test]
fn a_head_and_two_hands_take_24_bytes_and_come_back_within_a_millimetre_and_a_degree() {
    let figure = headset();
    let motion = Motion::encode(&MotionContent {
        seq: 7,
        figure: Some(figure),
        ..MotionContent::default()
    })
    .unwrap();
    assert_eq!(body_len(&motion), 24, "head 10 B + two hands of 7 B");
    let back = motion.decode().unwrap();
    assert_eq!(back.seq, 7);
    let got = back.figure.unwrap();
    let (d, a) = error(&got.head.unwrap(), &figure.head.unwrap());
    assert!(
        d <= 1 && a <= rotation_bound(ROTATION_BITS),
        "head off by {d} mm, {a} rad"
    );
    for i in 0..2 {
        let (d, a) = error(&got.hands[i].unwrap(), &figure.hands[i].unwrap());
        assert!(
            d <= 2 && a <= rotation_bound(HAND_ROTATION_BITS),
            "hand {i} off by {d} mm, {a} rad"
        );
    }
    assert_eq!(got.cursor, None);
    assert!(back.moving.is_empty() && back.ended.is_empty());
}

/// A cursor alone, through a motion and back.
fn cursor_back(cursor: Pose) -> Pose {
    let motion = Motion::encode(&MotionContent {
        figure: Some(Figure {
            cursor: Some(cursor),
            ..Figure::default()
        }),
        ..MotionContent::default()
    })
    .unwrap();
    motion.decode().unwrap().figure.unwrap().cursor.unwrap()
}

#[test]
fn the_identity_rotation_travels_exactly() {
    let cursor = pose(3.0, 0.0, 4.0, Quat::IDENTITY);
    let got = cursor_back(cursor);
    assert_eq!(got, cursor);
}

/// Near the corner where all four components are about 1/2, the three sent components' errors
/// add up in the rebuilt fourth: the worst case, found by the proptest below (0.00403 rad, past
/// the 0.004 this test once assumed), stays within the bound derived from the bit width.
#[test]
fn a_rotation_near_the_four_halves_corner_comes_back_within_the_derived_bound() {
    let cursor = Pose {
        position_mm: [0; 3],
        rotation: [-13805, -17748, -17844, -15801],
    };
    let got = cursor_back(cursor);
    let (_, a) = error(&got, &cursor);
    assert!(a > 0.004, "the case that broke the old bound ({a} rad)");
    assert!(a <= rotation_bound(ROTATION_BITS), "{a} rad");
}

#[test]
fn a_far_cursor_keeps_a_few_centimetres_precision_and_hands_beyond_reach_are_clamped() {
    let head = pose(0.5, 1.6, 0.5, Quat::IDENTITY);
    let far = pose(300.0, -2.0, -150.25, turn(Vec3::Y, 10.0));
    let wild = pose(9.0, 1.6, 0.5, Quat::IDENTITY);
    let motion = Motion::encode(&MotionContent {
        figure: Some(Figure {
            head: Some(head),
            hands: [Some(wild), None],
            cursor: Some(far),
        }),
        ..MotionContent::default()
    })
    .unwrap();
    let got = motion.decode().unwrap().figure.unwrap();
    let (d, _) = error(&got.cursor.unwrap(), &far);
    assert!(d <= 32, "300 m away: {d} mm (64 mm steps past 262 m)");
    let hand = got.hands[0].unwrap();
    assert_eq!(hand.position_mm[0], 500 + 511 * 4, "clamped to reach");
    assert_eq!(got.hands[1], None);
}

#[test]
fn a_dragged_entity_takes_12_bytes_and_a_scaled_one_its_scale_more() {
    let t = |x: f32| {
        PreviewTransform::quantize(&crate::command::Transform {
            translation: Vec3::new(x, 0.75, -2.0),
            rotation: turn(Vec3::Y, 45.0),
            scale: Vec3::ONE,
        })
    };
    let one = MotionContent {
        seq: 3,
        moving: vec![(EntityId::new(AuthorId(4), 17), t(1.5))],
        ..MotionContent::default()
    };
    let two = MotionContent {
        moving: vec![
            (EntityId::new(AuthorId(4), 17), t(1.5)),
            (EntityId::new(AuthorId(2), 99), t(-3.25)),
        ],
        ..one.clone()
    };
    let a = Motion::encode(&one).unwrap();
    let b = Motion::encode(&two).unwrap();
    assert_eq!(b.bytes.len() - a.bytes.len(), 12, "one more moving entity");
    let back = b.decode().unwrap();
    assert_eq!(
        back.figure, None,
        "a preview alone leaves presence as it is"
    );
    for ((e, got), (want_e, want)) in back.moving.iter().zip(&two.moving) {
        assert_eq!(e, want_e);
        let (d, a) = error(&got.pose, &want.pose);
        assert!(
            d <= 1 && a <= rotation_bound(ROTATION_BITS),
            "{d} mm, {a} rad"
        );
        assert_eq!(got.scale_permille, [1000; 3]);
    }
    let mut scaled = one.clone();
    scaled.moving[0].1.scale_permille = [2000, 500, 1000];
    let s = Motion::encode(&scaled).unwrap();
    assert_eq!(s.bytes.len() - a.bytes.len(), 6, "three scale varints");
    assert_eq!(
        s.decode().unwrap().moving[0].1.scale_permille,
        [2000, 500, 1000]
    );
    let mut ended = one;
    ended.moving.clear();
    ended.ended = vec![EntityId::new(AuthorId(4), 17)];
    let e = Motion::encode(&ended).unwrap();
    assert_eq!(e.decode().unwrap().ended, ended.ended);
}

#[test]
fn expand_gives_the_presence_and_preview_messages_it_stands_for() {
    let content = MotionContent {
        seq: 9,
        figure: Some(headset()),
        moving: vec![(
            EntityId::new(AuthorId(1), 2),
            PreviewTransform::quantize(&crate::command::Transform::IDENTITY),
        )],
        ended: vec![EntityId::new(AuthorId(1), 3)],
    };
    let of = MotionOf {
        author: AuthorId(5),
        motion: Motion::encode(&content).unwrap(),
    };
    let decoded = of.motion.decode().unwrap();
    let msgs = of.expand().unwrap();
    assert_eq!(msgs.len(), 3);
    let ServerMsg::Presence(p) = &msgs[0] else {
        panic!("presence first: {msgs:?}")
    };
    assert_eq!((p.author, p.presence.seq), (AuthorId(5), 9));
    assert_eq!(p.presence.head, decoded.figure.unwrap().head);
    let ServerMsg::Preview(m) = &msgs[1] else {
        panic!("{msgs:?}")
    };
    assert_eq!(m.preview.entity, EntityId::new(AuthorId(1), 2));
    assert_eq!(m.preview.transform, Some(decoded.moving[0].1));
    let ServerMsg::Preview(e) = &msgs[2] else {
        panic!("{msgs:?}")
    };
    assert_eq!(
        (e.preview.entity, e.preview.transform),
        (EntityId::new(AuthorId(1), 3), None)
    );
}

#[test]
fn bad_bytes_are_refused_with_their_reason_never_a_panic() {
    let whole = Motion::encode(&MotionContent {
        figure: Some(headset()),
        moving: vec![(
            EntityId::new(AuthorId(1), 2),
            PreviewTransform::quantize(&crate::command::Transform::IDENTITY),
        )],
        ..MotionContent::default()
    })
    .unwrap();
    for cut in 0..whole.bytes.len() {
        let short = Motion {
            bytes: whole.bytes[..cut].to_vec(),
        };
        assert_eq!(short.decode(), Err(MotionError::Truncated), "cut at {cut}");
    }
    let mut long = whole.clone();
    long.bytes.push(0);
    assert_eq!(long.decode(), Err(MotionError::TrailingBytes(1)));
    let mut unknown = whole.clone();
    unknown.bytes[2] |= 0x80;
    assert!(matches!(
        unknown.decode(),
        Err(MotionError::UnknownParts(_))
    ));
    let orphan = Motion {
        bytes: vec![0, 0, PART_HEAD, 0, 0, 0],
    };
    assert!(
        matches!(orphan.decode(), Err(MotionError::UnknownParts(_))),
        "a head outside a presence update"
    );
    let mut many = vec![0, 0, PART_ENTITIES, 0, 0, 0];
    many.push(65);
    assert_eq!(
        Motion { bytes: many }.decode(),
        Err(MotionError::TooManyEntities(65))
    );
    let too_many = MotionContent {
        ended: (0..65).map(|i| EntityId::new(AuthorId(1), i)).collect(),
        ..MotionContent::default()
    };
    assert_eq!(Motion::encode(&too_many), Err(MotionError::TooLarge));
}

#[test]
fn a_motion_travels_as_a_client_message() {
    let motion = Motion::encode(&MotionContent {
        seq: 1,
        figure: Some(headset()),
        ..MotionContent::default()
    })
    .unwrap();
    let bytes = postcard::to_allocvec(&ClientMsg::Motion(motion.clone())).unwrap();
    assert_eq!(
        bytes.len(),
        1 + 1 + motion.bytes.len(),
        "tag, length, packed bytes"
    );
    assert_eq!(
        decode_payload::<ClientMsg>(&bytes).unwrap(),
        ClientMsg::Motion(motion)
    );
}

#[test]
fn sequence_numbers_unwrap_to_the_nearest_32_bit_value() {
    assert_eq!(unwrap_seq(0, 1), 1);
    assert_eq!(unwrap_seq(0xffff, 0), 0x1_0000, "forward across the wrap");
    assert_eq!(
        unwrap_seq(0x1_0001, 0xffff),
        0xffff,
        "a late one from before the wrap"
    );
    assert_eq!(unwrap_seq(0x2_0005, 0x0003), 0x2_0003);
    assert_eq!(unwrap_seq(u32::MAX, 0), 0, "the 32-bit wrap too");
}

fn any_pose(range_m: f32) -> impl Strategy<Value = Pose> {
    (
        -range_m..range_m,
        -range_m..range_m,
        -range_m..range_m,
        -1.0f32..1.0,
        -1.0f32..1.0,
        -1.0f32..1.0,
        -1.0f32..1.0,
    )
        .prop_map(|(x, y, z, a, b, c, d)| pose(x, y, z, Quat::from_xyzw(a, b, c, d)))
}

proptest! {
    #[test]
    fn any_pose_within_a_kilometre_comes_back_within_its_steps(
        head in any_pose(500.0),
        cursor in any_pose(500.0),
        reach in (any_pose(0.9), any_pose(0.9)),
        seq in any::<u16>(),
    ) {
        let at = |p: Pose| Pose {
            position_mm: core::array::from_fn(|i| p.position_mm[i] + head.position_mm[i]),
            rotation: p.rotation,
        };
        let figure = Figure {
            head: Some(head),
            hands: [Some(at(reach.0)), Some(at(reach.1))],
            cursor: Some(cursor),
        };
        let motion = Motion::encode(&MotionContent {
            seq,
            figure: Some(figure),
            ..MotionContent::default()
        }).unwrap();
        let got = motion.decode().unwrap();
        prop_assert_eq!(got.seq, seq);
        let got = got.figure.unwrap();
        let (d, a) = error(&got.head.unwrap(), &head);
        prop_assert!(d <= 1 && a <= rotation_bound(ROTATION_BITS), "head {} mm {} rad", d, a);
        let (d, a) = error(&got.cursor.unwrap(), &cursor);
        prop_assert!(d <= 32 && a <= rotation_bound(ROTATION_BITS), "cursor {} mm {} rad", d, a);
        for i in 0..2 {
            let (d, a) = error(&got.hands[i].unwrap(), &figure.hands[i].unwrap());
            prop_assert!(d <= 2 && a <= rotation_bound(HAND_ROTATION_BITS), "hand {} mm {} rad", d, a);
        }
    }

    #[test]
    fn arbitrary_bytes_decode_or_refuse_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
        let motion = Motion { bytes };
        if let Ok(content) = motion.decode() {
            // What decodes re-encodes to something that decodes to the same content.
            let again = Motion::encode(&content).unwrap().decode().unwrap();
            prop_assert_eq!(again.moving.len(), content.moving.len());
            prop_assert_eq!(again.ended, content.ended);
            prop_assert_eq!(again.figure.is_some(), content.figure.is_some());
        }
    }
}
