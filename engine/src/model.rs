//! The checked workflow model (filled in by the loader).

use std::time::Duration;

/// Parse a duration: `500ms`, `30s`, `5m`, `1h30m`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<f64>() {
        if secs >= 0.0 && secs.is_finite() {
            return Ok(Duration::from_secs_f64(secs));
        }
    }
    humantime::parse_duration(t)
        .map_err(|_| format!("invalid duration `{text}` (expected e.g. `500ms`, `30s`, `5m`, `1h30m`)"))
}
