//! geolb: an authoritative GeoDNS load-balancing server.

pub mod tenants;
