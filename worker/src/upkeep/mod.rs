//! Loops that run beside the message path: [`keepalive`] keeps held messages from being restored
//! and restores dead workers' messages, [`registration`] declares the consumed queues again after
//! a loss, [`control`] answers remote control (`celery inspect` / `control`, Flower).

pub(crate) mod control;
pub(crate) mod keepalive;
pub(crate) mod registration;
