//! geolb: an authoritative GeoDNS load-balancing server.
