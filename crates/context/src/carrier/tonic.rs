//! `tonic::metadata::MetadataMap` as a carrier (feature `tonic`).

use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, KeyRef, MetadataMap};

use super::{Carrier, CarrierError, CarrierMut};

impl Carrier for MetadataMap {
    fn get(&self, name: &str) -> Option<&str> {
        MetadataMap::get_all(self, name).into_iter().find_map(|v| v.to_str().ok())
    }
    fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        // Lookups by `&str` are case-insensitive, as in `http::HeaderMap`.
        MetadataMap::get_all(self, name).into_iter().filter_map(|v| v.to_str().ok())
    }
    fn keys(&self) -> impl Iterator<Item = &str> {
        MetadataMap::keys(self).map(|k| match k {
            KeyRef::Ascii(k) => k.as_str(),
            KeyRef::Binary(k) => k.as_str(),
        })
    }
}

impl CarrierMut for MetadataMap {
    fn set(&mut self, name: &str, value: &str) -> Result<(), CarrierError> {
        let key = AsciiMetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes())
            .map_err(|_| CarrierError::InvalidName(name.to_owned()))?;
        let value = AsciiMetadataValue::try_from(value).map_err(|_| CarrierError::InvalidValue(name.to_owned()))?;
        self.insert(key, value);
        Ok(())
    }
}
