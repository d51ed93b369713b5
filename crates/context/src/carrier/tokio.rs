//! `tokio::process::Command` as a carrier (feature `tokio`).

use super::{CarrierError, CarrierMut, check_env_value, env_var_name};

/// Writes each field as an environment variable of the child (`TRACEPARENT`, ...).
impl CarrierMut for tokio::process::Command {
    fn set(&mut self, name: &str, value: &str) -> Result<(), CarrierError> {
        check_env_value(name, value)?;
        self.env(env_var_name(name), value);
        Ok(())
    }
}
