//! Provisional: replaced by the real GeoIP module.
use std::net::IpAddr;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Code2(pub [u8; 2]);
impl Code2 {
    pub fn parse(s: &str) -> Option<Code2> {
        let b = s.as_bytes();
        if b.len() == 2 && b.iter().all(u8::is_ascii_alphabetic) {
            Some(Code2([
                b[0].to_ascii_uppercase(),
                b[1].to_ascii_uppercase(),
            ]))
        } else {
            None
        }
    }
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Coord {
    pub lat: f64,
    pub lon: f64,
}
impl Coord {
    pub fn distance_km(&self, other: &Coord) -> f64 {
        let (la1, lo1, la2, lo2) = (
            self.lat.to_radians(),
            self.lon.to_radians(),
            other.lat.to_radians(),
            other.lon.to_radians(),
        );
        let a = ((la2 - la1) / 2.0).sin().powi(2)
            + la1.cos() * la2.cos() * ((lo2 - lo1) / 2.0).sin().powi(2);
        2.0 * 6371.0088 * a.sqrt().asin()
    }
}
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Place {
    pub coord: Option<Coord>,
    pub country: Option<Code2>,
    pub continent: Option<Code2>,
}
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Located {
    pub place: Option<Place>,
    pub prefix_len: u8,
}
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    #[error("{0}")]
    Open(String),
}
pub struct GeoDb;
impl GeoDb {
    pub fn open(path: &Path) -> Result<GeoDb, GeoError> {
        Err(GeoError::Open(format!("{}: not supported", path.display())))
    }
    pub fn lookup(&self, _ip: IpAddr) -> Located {
        Located {
            place: None,
            prefix_len: 0,
        }
    }
}
