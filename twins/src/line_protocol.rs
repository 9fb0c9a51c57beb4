//! InfluxDB line protocol encoding of an [`Observation`]: one line per observation,
//! measurement per sensor type, tags for the sensor, one float field per quantity plus the
//! sequence number as an integer field, and the observation's own time in milliseconds
//! (write with `precision=ms`).
//!
//! ```text
//! air_quality,sensor_id=aq-fdf-01,type=air-quality,district=Fort-de-France pm10=31.2,pm2_5=12,no2=18.5,h2s=0,seq=42i 1795570779000
//! ```

use crate::kind::SensorKind;
use crate::observation::Observation;

impl SensorKind {
    /// The measurement name of this kind: its name with `_` for `-` (`air_quality`).
    pub fn measurement(self) -> &'static str {
        match self {
            SensorKind::Traffic => "traffic",
            SensorKind::AirQuality => "air_quality",
            SensorKind::Parking => "parking",
            SensorKind::Noise => "noise",
            SensorKind::Weather => "weather",
            SensorKind::Light => "light",
        }
    }
}

/// Escape a tag key or value: commas, equals signs and spaces get a backslash.
fn push_tag(out: &mut String, value: &str) {
    if !value.bytes().any(|b| matches!(b, b',' | b'=' | b' ' | b'\\' | b'\n' | b'\r')) {
        out.push_str(value);
        return;
    }
    for c in value.chars() {
        if matches!(c, ',' | '=' | ' ' | '\\') {
            out.push('\\');
        }
        if c == '\n' || c == '\r' {
            out.push(' ');
        } else {
            out.push(c);
        }
    }
}

impl Observation {
    /// Append this observation as one line of line protocol (with its newline).
    pub fn write_line_protocol(&self, out: &mut String) {
        out.push_str(self.kind.measurement());
        out.push_str(",sensor_id=");
        push_tag(out, &self.sensor_id);
        out.push_str(",type=");
        out.push_str(self.kind.as_str());
        if !self.district.is_empty() {
            out.push_str(",district=");
            push_tag(out, &self.district);
        }
        let mut first = true;
        for (q, v) in self.measurements() {
            if !v.is_finite() {
                continue; // line protocol has no NaN or infinity
            }
            out.push(if first { ' ' } else { ',' });
            first = false;
            out.push_str(q.name);
            out.push('=');
            crate::fastfmt::push_f64(out, v);
        }
        out.push_str(if first { " seq=" } else { ",seq=" });
        crate::fastfmt::push_u64(out, self.seq);
        out.push_str("i ");
        crate::fastfmt::push_i64(out, self.observed_at.timestamp_millis());
        out.push('\n');
    }

    /// This observation as one line of line protocol.
    pub fn to_line_protocol(&self) -> String {
        let mut s = String::with_capacity(200);
        self.write_line_protocol(&mut s);
        s
    }
}

#[cfg(test)]
mod tests {
    use crate::{GeoPoint, Observation, SensorKind};
    use chrono::TimeZone;

    #[test]
    fn encodes_tags_fields_and_time() {
        let o = Observation {
            sensor_id: "aq-fdf-01".into(),
            kind: SensorKind::AirQuality,
            seq: 42,
            observed_at: chrono::Utc.timestamp_millis_opt(1_795_570_779_123).single().expect("time"),
            location: GeoPoint { lat: 14.6, lon: -61.0 },
            district: "Le François".into(),
            values: crate::Values::from([31.2, 12.0, 18.5, 0.0]),
        };
        assert_eq!(
            o.to_line_protocol(),
            "air_quality,sensor_id=aq-fdf-01,type=air-quality,district=Le\\ François pm10=31.2,pm2_5=12,no2=18.5,h2s=0,seq=42i 1795570779123\n"
        );
    }
}
