//! The system step tests and their support (test hosts, a signed apt repository).

mod apt;
mod firewall;
mod lab;
mod repo;
mod service;
mod user;
