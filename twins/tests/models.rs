//! Model-level tests: determinism, value ranges for any step size, realistic behaviour and
//! persistence of a twin through serde.

use chrono::{DateTime, Datelike, Duration, TimeZone, Timelike, Utc, Weekday};
use twins::{geo, ModelState, Observation, SensorKind, SensorSpec, Twin};

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).single().expect("valid date")
}

/// Martinique local time (UTC-4) to UTC.
fn local(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    utc(y, mo, d, h, mi) + Duration::hours(4)
}

fn spec(kind: SensorKind, district: &str, id: &str) -> SensorSpec {
    let d = geo::district(district).expect("known district");
    SensorSpec { id: id.to_owned().into(), kind, district: district.to_owned().into(), location: d.place(0, 1) }
}

fn fleet() -> Vec<SensorSpec> {
    let mut out = Vec::new();
    for kind in SensorKind::ALL {
        for (i, district) in
            ["Fort-de-France", "Le Lamentin", "Le Robert", "Sainte-Anne", "Gros-Morne"].iter().enumerate()
        {
            out.push(spec(kind, district, &format!("{}-{i:02}", kind.as_str())));
        }
    }
    out
}

fn assert_in_range(o: &Observation) {
    assert_eq!(o.values.len(), o.kind.quantities().len());
    for (q, v) in o.measurements() {
        assert!(
            v.is_finite() && v >= q.min && v <= q.max,
            "{} {} = {v} outside [{}, {}] at {}",
            o.sensor_id,
            q.name,
            q.min,
            q.max,
            o.observed_at
        );
    }
}

/// Step times from `start` every `step` for `n` steps.
fn times(start: DateTime<Utc>, step: Duration, n: i64) -> impl Iterator<Item = DateTime<Utc>> {
    (0..n).map(move |i| start + step * i as i32)
}

// ---- determinism ------------------------------------------------------------------------

#[test]
fn same_seed_and_times_give_identical_observations() {
    // Irregular step times: 1 s to 40 min.
    let mut t = utc(2026, 6, 20, 9, 0);
    let mut steps = Vec::new();
    for i in 0..400u32 {
        t += Duration::seconds(i64::from(1 + (i * 7919) % 2400));
        steps.push(t);
    }
    for s in fleet() {
        let mut a = Twin::new(s.clone(), 2026);
        let mut b = Twin::new(s.clone(), 2026);
        let mut c = Twin::new(s.clone(), 2027);
        let mut differs = false;
        for &at in &steps {
            let (oa, ob, oc) = (a.step(at), b.step(at), c.step(at));
            assert_eq!(oa.to_mqtt_json(), ob.to_mqtt_json());
            assert!(oa.values.iter().zip(&ob.values).all(|(x, y)| x.to_bits() == y.to_bits()));
            differs |= oa.values != oc.values;
        }
        assert_eq!(a, b);
        assert!(differs, "{}: another seed must give other values", s.id);
    }
}

#[test]
fn sensors_of_one_seed_have_independent_streams() {
    let a = spec(SensorKind::Weather, "Le Lamentin", "w-1");
    let b = SensorSpec { id: "w-2".to_owned().into(), ..a.clone() };
    let (mut ta, mut tb) = (Twin::new(a, 5), Twin::new(b, 5));
    let at = utc(2026, 3, 1, 12, 0);
    let _ = (ta.step(at), tb.step(at));
    let later = at + Duration::minutes(15);
    assert_ne!(ta.step(later).values, tb.step(later).values);
}

// ---- ranges -----------------------------------------------------------------------------

#[test]
fn a_year_at_15_minute_steps_stays_in_range() {
    for s in fleet() {
        let mut twin = Twin::new(s, 11);
        for (i, at) in times(local(2026, 1, 1, 0, 0), Duration::minutes(15), 365 * 96).enumerate() {
            let o = twin.step(at);
            assert_eq!(o.seq, i as u64 + 1);
            assert_in_range(&o);
        }
    }
}

#[test]
fn tiny_huge_zero_and_backward_steps_stay_in_range() {
    for s in fleet() {
        let mut twin = Twin::new(s, 3);
        let mut at = local(2026, 8, 10, 17, 0);
        assert_eq!(twin.seq(), 0);
        assert!(twin.last_observed_at().is_none());
        for _ in 0..3600 {
            at += Duration::seconds(1);
            assert_in_range(&twin.step(at));
        }
        for jump in [
            Duration::hours(1),
            Duration::days(1),
            Duration::days(45),
            Duration::days(400),
            Duration::zero(),
            Duration::hours(-3),
        ] {
            at += jump;
            assert_in_range(&twin.step(at));
            assert_eq!(twin.last_observed_at(), Some(at));
        }
        for _ in 0..100 {
            at += Duration::milliseconds(250);
            assert_in_range(&twin.step(at));
        }
    }
}

// ---- behaviour --------------------------------------------------------------------------

/// Steps a twin every 5 min over `days` days from `start` (local midnight), calling `f`.
fn run(twin: &mut Twin, start: DateTime<Utc>, days: i64, mut f: impl FnMut(&Observation, &Twin)) {
    for at in times(start, Duration::minutes(5), days * 288) {
        let o = twin.step(at);
        f(&o, twin);
    }
}

fn local_hm(at: DateTime<Utc>) -> (Weekday, u32, u32) {
    let l = at - Duration::hours(4);
    (l.weekday(), l.hour(), l.minute())
}

fn is_weekday(d: Weekday) -> bool {
    !matches!(d, Weekday::Sat | Weekday::Sun)
}

#[test]
fn traffic_rush_hour_beats_the_night_on_weekdays() {
    for district in ["Fort-de-France", "Le Lamentin", "Sainte-Anne"] {
        let mut twin = Twin::new(spec(SensorKind::Traffic, district, &format!("tr-{district}")), 1);
        let (mut rush, mut night, mut sunday_rush) = (Vec::new(), Vec::new(), Vec::new());
        run(&mut twin, local(2026, 3, 2, 0, 0), 28, |o, _| {
            let flow = o.value("vehicle_flow").expect("flow");
            match local_hm(o.observed_at) {
                (d, 7, 30) if is_weekday(d) => rush.push(flow),
                (d, 3, 0) if is_weekday(d) => night.push(flow),
                (Weekday::Sun, 7, 30) => sunday_rush.push(flow),
                _ => {}
            }
        });
        assert_eq!(rush.len(), 20);
        for (r, n) in rush.iter().zip(&night) {
            assert!(r > n, "{district}: 7:30 {r} vs 3:00 {n}");
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        assert!(mean(&sunday_rush) < mean(&rush), "{district}: weekends are lighter");
    }
}

#[test]
fn a1_peak_is_congested_and_incidents_happen() {
    // Find an A1 sensor in Le Lamentin (the road is picked from the id hash).
    let spec = (0..50)
        .map(|i| spec(SensorKind::Traffic, "Le Lamentin", &format!("tr-lam-{i}")))
        .find(|s| matches!(Twin::new(s.clone(), 0).state(), ModelState::Traffic(t) if t.road == "A1"))
        .expect("some id maps to the A1");
    let mut twin = Twin::new(spec, 9);
    let (mut peak_speed, mut night_speed, mut occupancy_peak) = (Vec::new(), Vec::new(), Vec::new());
    run(&mut twin, local(2026, 3, 2, 0, 0), 120, |o, _| match local_hm(o.observed_at) {
        (d, 7, 30) if is_weekday(d) => {
            peak_speed.push(o.value("average_speed").expect("speed"));
            occupancy_peak.push(o.value("occupancy").expect("occupancy"));
        }
        (d, 3, 0) if is_weekday(d) => night_speed.push(o.value("average_speed").expect("speed")),
        _ => {}
    });
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    assert!(mean(&peak_speed) < 0.6 * mean(&night_speed), "peak {} night {}", mean(&peak_speed), mean(&night_speed));
    assert!(mean(&occupancy_peak) > 30.0);
    let ModelState::Traffic(state) = twin.state() else { panic!("traffic state") };
    assert!((5..=200).contains(&state.incidents_total), "{} incidents in 120 days", state.incidents_total);
}

#[test]
fn street_lights_follow_dusk_and_dawn() {
    let mut twin = Twin::new(spec(SensorKind::Light, "Fort-de-France", "sl-fdf-1"), 4);
    let (mut checked_night, mut checked_noon) = (0, 0);
    for at in times(local(2026, 1, 1, 0, 0), Duration::minutes(30), 365 * 48) {
        let o = twin.step(at);
        let (status, power) = (o.value("status").expect("status"), o.value("power").expect("power"));
        match local_hm(at) {
            (_, 22, 0) => {
                assert_eq!(status, 1.0, "on at 22:00 local, {at}");
                assert!(power > 20.0, "{power} W");
                checked_night += 1;
            }
            (_, 12, 0) => {
                assert_eq!((status, power, o.value("dimming")), (0.0, 0.0, Some(0.0)), "off at noon, {at}");
                checked_noon += 1;
            }
            _ => {}
        }
        if status == 0.0 {
            assert_eq!(power, 0.0);
        }
    }
    assert_eq!((checked_night, checked_noon), (365, 365));
    let ModelState::Light(state) = twin.state() else { panic!("light state") };
    // ~11-13 h a night: a year adds roughly 4 000-4 600 burning hours.
    let mut fresh = Twin::new(twin.spec().clone(), 4);
    let _ = fresh.step(local(2026, 1, 1, 0, 0));
    let ModelState::Light(start) = fresh.state() else { panic!("light state") };
    let added = state.burning_hours - start.burning_hours;
    assert!((4000.0..4600.0).contains(&added), "{added} h");
}

#[test]
fn july_temperature_matches_the_normal_and_rain_follows_the_seasons() {
    let mut twin = Twin::new(spec(SensorKind::Weather, "Le Lamentin", "wx-lam"), 21);
    let (mut july_sum, mut july_n) = (0.0, 0u32);
    let mut rain_by_month = [0.0; 12];
    let mut last_rainfall = 0.0;
    let (mut afternoon_rh, mut night_rh) = (Vec::new(), Vec::new());
    let mut wind_dirs = Vec::new();
    for at in times(local(2026, 1, 1, 0, 5), Duration::minutes(10), 365 * 144) {
        let o = twin.step(at);
        let l = at - Duration::hours(4);
        if l.month() == 7 {
            july_sum += o.value("temperature").expect("t");
            july_n += 1;
        }
        let rainfall = o.value("rainfall").expect("rainfall");
        // Accumulation restarts at local midnight.
        let fallen = if rainfall + 1e-9 >= last_rainfall { rainfall - last_rainfall } else { rainfall };
        rain_by_month[l.month0() as usize] += fallen;
        last_rainfall = rainfall;
        match l.hour() {
            14 => afternoon_rh.push(o.value("relative_humidity").expect("rh")),
            4 => night_rh.push(o.value("relative_humidity").expect("rh")),
            _ => {}
        }
        wind_dirs.push(o.value("wind_direction").expect("dir"));
    }
    let july_mean = july_sum / f64::from(july_n);
    // weather.monthly_mean_temperature_normal.Jul = 27.9 °C
    assert!((july_mean - 27.9).abs() < 1.5, "July mean {july_mean}");
    let total: f64 = rain_by_month.iter().sum();
    assert!((1200.0..3200.0).contains(&total), "annual rain {total} mm (normal 2090)");
    assert!(rain_by_month[9] > rain_by_month[2], "October wetter than March: {rain_by_month:?}");
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    assert!(mean(&afternoon_rh) + 10.0 < mean(&night_rh), "humidity anti-correlated with temperature");
    let trade = wind_dirs.iter().filter(|d| (45.0..=135.0).contains(*d)).count() as f64 / wind_dirs.len() as f64;
    assert!(trade > 0.9, "trade wind from E/ENE {trade}");
}

#[test]
fn saharan_dust_raises_pm10_above_background() {
    let mut twin = Twin::new(spec(SensorKind::AirQuality, "Fort-de-France", "aq-fdf-01"), 8);
    let (mut dusty, mut clear) = (Vec::new(), Vec::new());
    let mut pm10_all = Vec::new();
    for at in times(local(2026, 1, 1, 0, 0), Duration::minutes(15), 365 * 96) {
        let o = twin.step(at);
        let pm10 = o.value("pm10").expect("pm10");
        pm10_all.push(pm10);
        let ModelState::AirQuality(s) = twin.state() else { panic!("aq state") };
        if s.dust_intensity > 10.0 {
            assert!(s.dust_episode.is_some());
            dusty.push(pm10);
        } else if s.dust_episode.is_none() {
            clear.push(pm10);
        }
        assert!(o.value("pm2_5").expect("pm2.5") < pm10);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    assert!(!dusty.is_empty() && !clear.is_empty());
    assert!(mean(&dusty) > mean(&clear) + 10.0, "dust {} vs clear {}", mean(&dusty), mean(&clear));
    // air_quality.pm10_mean_traffic_sites = 35.8 µg/m³ for an agglomeration site.
    let year = mean(&pm10_all);
    assert!((25.0..50.0).contains(&year), "annual PM10 {year}");
    assert!(pm10_all.iter().any(|p| *p > 50.0), "some dust episode crosses the 50 µg/m³ threshold");
}

#[test]
fn h2s_only_on_the_atlantic_coast_and_episodic_there() {
    let fleet = [
        ("Fort-de-France", false),
        ("Gros-Morne", false),
        ("Les Trois-Îlets", false),
        ("Le Robert", true),
        ("Le Vauclin", true),
    ];
    for (district, atlantic) in fleet {
        let mut twin = Twin::new(spec(SensorKind::AirQuality, district, &format!("aq-{district}")), 8);
        let h2s: Vec<f64> = times(local(2026, 1, 1, 0, 0), Duration::minutes(30), 365 * 48)
            .map(|at| twin.step(at).value("h2s").expect("h2s"))
            .collect();
        if atlantic {
            let share = |pred: &dyn Fn(f64) -> bool| h2s.iter().filter(|x| pred(**x)).count() as f64 / h2s.len() as f64;
            // sargassum_h2s.thresholds: 0.07 ppm info threshold, < 0.03 odourless background.
            let episodes = share(&|x| x > 0.07);
            let quiet = share(&|x| x < 0.03);
            assert!((0.05..0.9).contains(&episodes), "{district}: above 0.07 ppm {episodes}");
            assert!(quiet > 0.1, "{district}: quiet share {quiet}");
            assert!(h2s.iter().any(|x| *x > 0.5), "{district}: some strong episode");
        } else {
            assert!(h2s.iter().all(|x| *x == 0.0), "{district} must see no H2S");
        }
    }
}

#[test]
fn parking_fills_by_day_and_empties_at_night() {
    for district in ["Fort-de-France", "Le Lamentin"] {
        let mut twin = Twin::new(spec(SensorKind::Parking, district, &format!("pk-{district}")), 2);
        let (mut late_morning, mut small_hours) = (Vec::new(), Vec::new());
        run(&mut twin, local(2026, 5, 4, 0, 0), 21, |o, _| {
            let occ = o.value("occupancy").expect("occupancy");
            let (occupied, free, capacity) = (
                o.value("occupied_spots").expect("occupied"),
                o.value("free_spots").expect("free"),
                o.value("capacity").expect("capacity"),
            );
            assert_eq!(occupied + free, capacity);
            assert_eq!(occupied.fract(), 0.0);
            match local_hm(o.observed_at) {
                (d, 11, 0) if is_weekday(d) => late_morning.push(occ),
                (d, 4, 0) if is_weekday(d) => small_hours.push(occ),
                _ => {}
            }
        });
        for (day, night) in late_morning.iter().zip(&small_hours) {
            assert!(day > night, "{district}: 11:00 {day}% vs 4:00 {night}%");
        }
    }
}

#[test]
fn noise_is_louder_by_day_and_on_arterials() {
    let mean_at = |district: &str, hour: u32| {
        let mut twin = Twin::new(spec(SensorKind::Noise, district, &format!("nz-{district}")), 6);
        let mut v = Vec::new();
        run(&mut twin, local(2026, 2, 2, 0, 0), 14, |o, _| {
            assert!(o.value("lamax").expect("lamax") >= o.value("laeq").expect("laeq"));
            if let (d, h, 0) = local_hm(o.observed_at) {
                if h == hour && is_weekday(d) {
                    v.push(o.value("laeq").expect("laeq"));
                }
            }
        });
        v.iter().sum::<f64>() / v.len() as f64
    };
    let (fdf_day, fdf_night) = (mean_at("Fort-de-France", 8), mean_at("Fort-de-France", 3));
    assert!(fdf_day > fdf_night + 4.0, "day {fdf_day} night {fdf_night}");
    assert!((62.0..78.0).contains(&fdf_day), "arterial daytime LAeq {fdf_day}");
    assert!(mean_at("Gros-Morne", 8) + 8.0 < fdf_day);
}

// ---- persistence ------------------------------------------------------------------------

#[test]
fn a_restored_twin_continues_exactly() {
    for s in fleet() {
        let mut original = Twin::new(s, 77);
        let start = local(2026, 6, 1, 0, 0);
        for at in times(start, Duration::seconds(397), 700) {
            let _ = original.step(at);
        }
        let stored = serde_json::to_string(&original).expect("serialize twin");
        let mut restored: Twin = serde_json::from_str(&stored).expect("deserialize twin");
        assert_eq!(restored, original);
        assert_eq!(restored.seq(), 700);
        for at in times(start + Duration::seconds(397 * 700), Duration::seconds(613), 300) {
            let (a, b) = (original.step(at), restored.step(at));
            assert_eq!(a, b);
        }
        assert_eq!(restored.seq(), 1000);
        assert_eq!(restored.state(), original.state());
    }
}

#[test]
fn state_is_tagged_by_model_for_inspection() {
    let mut twin = Twin::new(spec(SensorKind::AirQuality, "Le Robert", "aq-rob"), 1);
    let _ = twin.step(local(2026, 6, 1, 12, 0));
    let json = serde_json::to_value(twin.state()).expect("serialize state");
    assert_eq!(json["model"], "air-quality");
    assert!(json["atlantic_exposure"].as_f64().is_some_and(|x| x > 0.0));
    assert!(json.get("dust_episode").is_some());
}
