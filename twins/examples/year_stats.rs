//! Prints a year of statistics of a few sensors against the reference figures:
//! `cargo run -p twins --example year_stats`.

use chrono::{Datelike, Duration, TimeZone, Utc};
use twins::{geo, SensorKind, SensorSpec, Twin};

fn main() {
    let Some(start) = Utc.with_ymd_and_hms(2026, 1, 1, 4, 0, 0).single() else {
        return;
    };
    let mk = |kind: SensorKind, district: &str| {
        let d = geo::district(district).map(|d| (d.name.clone(), d.place(0, 1)));
        let (name, location) = d.unwrap_or_else(|| (district.to_owned(), twins::GeoPoint { lat: 14.6, lon: -61.0 }));
        Twin::new(SensorSpec { id: format!("{kind}-{name}").into(), kind, district: name.into(), location }, 2026)
    };
    let mut aq = mk(SensorKind::AirQuality, "Fort-de-France");
    let mut aq_rob = mk(SensorKind::AirQuality, "Le Robert");
    let mut wx = mk(SensorKind::Weather, "Le Lamentin");
    let (mut pm10_sum, mut n) = (0.0, 0.0);
    let mut daily = Vec::new();
    let (mut day_sum, mut day_n) = (0.0, 0.0);
    let mut h2s_over_1 = 0;
    let mut temp_by_month = [(0.0, 0.0); 12];
    let mut rain_by_month = [0.0; 12];
    let mut last_rain = 0.0;
    for i in 0..365 * 96 {
        let at = start + Duration::minutes(15 * i);
        let local_month = (at - Duration::hours(4)).month0() as usize;
        let o = aq.step(at);
        let pm10 = o.value("pm10").unwrap_or(0.0);
        pm10_sum += pm10;
        n += 1.0;
        day_sum += pm10;
        day_n += 1.0;
        if i % 96 == 95 {
            daily.push(day_sum / day_n);
            day_sum = 0.0;
            day_n = 0.0;
        }
        if aq_rob.step(at).value("h2s").unwrap_or(0.0) > 1.0 {
            h2s_over_1 += 1;
        }
        let w = wx.step(at);
        let t = w.value("temperature").unwrap_or(0.0);
        temp_by_month[local_month].0 += t;
        temp_by_month[local_month].1 += 1.0;
        let r = w.value("rainfall").unwrap_or(0.0);
        rain_by_month[local_month] += if r >= last_rain { r - last_rain } else { r };
        last_rain = r;
    }
    println!("PM10 FdF annual mean {:.1} µg/m3 (reference traffic sites 35.8)", pm10_sum / n);
    println!(
        "days with daily PM10 > 50: {}, > 80: {} (reference 30-60 procedure days)",
        daily.iter().filter(|d| **d > 50.0).count(),
        daily.iter().filter(|d| **d > 80.0).count()
    );
    println!("H2S > 1 ppm at Le Robert: {} quarter-hours", h2s_over_1);
    let temps: Vec<String> = temp_by_month.iter().map(|(s, c)| format!("{:.1}", s / c)).collect();
    println!("monthly mean temperature: {}", temps.join(" "));
    let rain: Vec<String> = rain_by_month.iter().map(|r| format!("{r:.0}")).collect();
    println!("monthly rain (mm): {} total {:.0}", rain.join(" "), rain_by_month.iter().sum::<f64>());
}
