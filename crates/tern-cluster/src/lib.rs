//! Tern's cluster layer: several broker nodes joined as one through NATS JetStream.
//!
//! The core stays deterministic and single-node: it emits what the other nodes must hear
//! (`tern_core::ClusterOp`) as output, and takes messages from them as input, as it does with
//! its store. This crate does the NATS side of that on a thread of its own. See ARCHITECTURE.md
//! ("Cluster over NATS JetStream") for what is built and what is planned.
//!
//! # Layout
//! - [`subject`]: MQTT topics and filters as NATS subjects, and back.
#![warn(missing_docs)]

pub mod subject;
