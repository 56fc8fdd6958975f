//! What reaches devices without being stored as room history: [`typing`] and [`presence`]
//! (pure trackers), and [`push`] notifications for devices that are offline.

pub mod presence;
pub mod push;
pub mod typing;
