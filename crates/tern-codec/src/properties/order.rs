//! The order a PUBLISH's or a will's properties arrived in, kept when it is not the order the
//! encoder writes them in, so that a broker forwards them as they were sent.

use alloc::boxed::Box;

use bytes::Bytes;

use super::PropertyId;
use crate::wire::Reader;

/// One step of an order: a property identifier and how many of it come in a row (more than one
/// only for the repeated properties, User Property and Subscription Identifier).
pub(super) type Run = (u8, u16);

/// Runs kept at most. Real clients send a few properties; a block interleaving its repeated
/// properties with more runs than this is written in the encoder's order instead (user
/// properties still keep theirs among themselves, which is what the spec requires), so the order
/// never costs more than a small constant to keep, whatever the input.
const RUNS_MAX: usize = 32;

/// The properties of a block in the order they arrived, as runs of one identifier. Empty when
/// the block came in the order the encoder writes anyway, which is the usual case and costs
/// nothing. A thin pointer: it sits in every PUBLISH, which is moved on the hot path.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct PropertyOrder(Option<Box<Runs>>);

/// The runs of a kept order, in one fixed-size allocation.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Runs {
    len: u8,
    runs: [Run; RUNS_MAX],
}

impl Runs {
    fn as_slice(&self) -> &[Run] {
        &self.runs[..usize::from(self.len)]
    }
}

impl PropertyOrder {
    /// The encoder's own order.
    pub const fn canonical() -> Self {
        Self(None)
    }

    /// Whether the properties are written in the encoder's own order.
    pub fn is_canonical(&self) -> bool {
        self.0.is_none()
    }

    /// The runs in arrival order, unless that is the encoder's own.
    pub(super) fn runs(&self) -> Option<&[Run]> {
        self.0.as_deref().map(Runs::as_slice)
    }

    /// This order without `id`'s entries (a property taken out of the block).
    pub(super) fn without(&mut self, id: PropertyId) {
        let Some(runs) = self.runs() else {
            return;
        };
        if runs.iter().any(|&(this, _)| this == id as u8) {
            *self = Self::of_runs(runs.iter().copied().filter(|&(this, _)| this != id as u8));
        }
    }

    /// The order of the properties in `block`, a complete block that has been decoded without
    /// error (so every identifier and value in it is well-formed).
    pub(super) fn of_block(block: &Reader) -> Self {
        let bytes = block.slice_between(0, block.position());
        let mut runs = [(0, 0); RUNS_MAX];
        let mut len = 0;
        let all_fit = for_each_run(&bytes, |run| {
            let Some(slot) = runs.get_mut(len) else {
                return false;
            };
            *slot = run;
            len += 1;
            true
        });
        if all_fit {
            Self::of_runs(runs[..len].iter().copied())
        } else {
            Self::canonical()
        }
    }

    /// The order made of `runs` (at most `RUNS_MAX`; none: the encoder's own).
    fn of_runs(runs: impl Iterator<Item = Run>) -> Self {
        let mut kept = Runs {
            len: 0,
            runs: [(0, 0); RUNS_MAX],
        };
        for (slot, run) in kept.runs.iter_mut().zip(runs) {
            *slot = run;
            kept.len += 1;
        }
        Self((kept.len > 0).then(|| Box::new(kept)))
    }
}

/// Calls `on` with each run of `block` in order while it returns true; returns whether it
/// always did.
fn for_each_run(block: &Bytes, mut on: impl FnMut(Run) -> bool) -> bool {
    let mut r = Reader::new(block.clone());
    let mut current: Option<Run> = None;
    while !r.is_empty() {
        let Some(id) = r.varint().ok().and_then(PropertyId::from_u32) else {
            break;
        };
        if id.skip_value(&mut r).is_err() {
            break;
        }
        let id = id as u8;
        match &mut current {
            Some((same, n)) if *same == id && *n < u16::MAX => *n += 1,
            _ => {
                if let Some(run) = current.replace((id, 1)) {
                    if !on(run) {
                        return false;
                    }
                }
            }
        }
    }
    current.is_none_or(on)
}

impl core::fmt::Debug for PropertyOrder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match &self.0 {
            None => f.write_str("canonical"),
            Some(runs) => f.debug_list().entries(runs.as_slice()).finish(),
        }
    }
}

/// Notices, while a block is decoded, whether its properties come in the encoder's order: each
/// property has a rank there, and the ranks of an ordered block never go down.
#[derive(Debug, Default)]
pub(super) struct RankCheck {
    last: u8,
    out_of_order: bool,
}

impl RankCheck {
    pub(super) fn see(&mut self, rank: u8) {
        self.out_of_order |= rank < self.last;
        self.last = rank;
    }

    /// The order to keep for `block`, read to its end.
    pub(super) fn finish(self, block: &Reader) -> PropertyOrder {
        if self.out_of_order {
            PropertyOrder::of_block(block)
        } else {
            PropertyOrder::canonical()
        }
    }
}
