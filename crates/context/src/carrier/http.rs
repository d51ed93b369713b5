//! `http::HeaderMap` as a carrier (feature `http`).

use http::{HeaderMap, HeaderName, HeaderValue};

use super::{Carrier, CarrierError, CarrierMut};

impl Carrier for HeaderMap {
    fn get(&self, name: &str) -> Option<&str> {
        HeaderMap::get_all(self, name).into_iter().find_map(|v| v.to_str().ok())
    }
    fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        // HeaderMap looks names up case-insensitively; values that are not visible ASCII
        // cannot be trace context and are skipped.
        HeaderMap::get_all(self, name).into_iter().filter_map(|v| v.to_str().ok())
    }
    fn keys(&self) -> impl Iterator<Item = &str> {
        HeaderMap::keys(self).map(HeaderName::as_str)
    }
}

impl CarrierMut for HeaderMap {
    fn set(&mut self, name: &str, value: &str) -> Result<(), CarrierError> {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| CarrierError::InvalidName(name.to_owned()))?;
        let value = HeaderValue::from_str(value).map_err(|_| CarrierError::InvalidValue(name.as_str().to_owned()))?;
        self.insert(name, value);
        Ok(())
    }
}
