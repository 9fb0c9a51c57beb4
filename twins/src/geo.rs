//! The 34 communes of Martinique (IGN Admin Express via gregoiredavid/france-geojson,
//! Licence Ouverte / Open Licence Etalab; see `data/SOURCES.md`), embedded at compile time.

use crate::rng::{fnv1a64, mix, Rng};
use crate::spec::GeoPoint;
use serde::Serialize;
use std::sync::OnceLock;

/// The island outline (one GeoJSON Feature), served as-is to the map page.
pub const OUTLINE_GEOJSON: &str = include_str!("../data/martinique-outline.geojson");
/// The 34 communes (GeoJSON FeatureCollection, properties `code` and `nom`).
pub const COMMUNES_GEOJSON: &str = include_str!("../data/martinique-communes.geojson");

/// One polygon: an exterior ring and optional holes, each ring a closed list of points.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Polygon {
    pub exterior: Vec<GeoPoint>,
    pub holes: Vec<Vec<GeoPoint>>,
}

/// A commune.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct District {
    /// INSEE code, e.g. `"97209"`.
    pub code: String,
    /// Official name as in the source file (no article): `"Fort-de-France"`, `"Lamentin"`.
    pub name: String,
    /// Area-weighted centroid of the exterior rings.
    pub centroid: GeoPoint,
    /// The commune's polygons (islets included).
    pub polygons: Vec<Polygon>,
    /// Bounding box: south-west and north-east corners.
    pub bbox: (GeoPoint, GeoPoint),
}

/// All communes, parsed once from [`COMMUNES_GEOJSON`], in INSEE code order.
pub fn districts() -> &'static [District] {
    static DISTRICTS: OnceLock<Vec<District>> = OnceLock::new();
    DISTRICTS.get_or_init(|| parse_communes(COMMUNES_GEOJSON))
}

/// Looks a commune up by name, ignoring case, accents, punctuation and a leading article
/// (`"Le Lamentin"`, `"lamentin"`, `"FORT DE FRANCE"`, `"Schoelcher"` all match), or by INSEE code.
pub fn district(name: &str) -> Option<&'static District> {
    // The common case, a name as the source writes it (models look their district up at
    // every twin's creation): no normalisation.
    if let Some(d) = districts().iter().find(|d| d.name == name) {
        return Some(d);
    }
    static NORMALIZED: OnceLock<Vec<String>> = OnceLock::new();
    let normalized = NORMALIZED.get_or_init(|| districts().iter().map(|d| normalize_name(&d.name)).collect());
    let wanted = normalize_name(name);
    if wanted.is_empty() {
        return None;
    }
    districts().iter().zip(normalized).find(|(d, n)| d.code == name.trim() || **n == wanted).map(|(d, _)| d)
}

impl District {
    /// Whether `p` lies inside one of the commune's polygons (even-odd rule, holes excluded).
    pub fn contains(&self, p: GeoPoint) -> bool {
        let (sw, ne) = self.bbox;
        if p.lat < sw.lat || p.lat > ne.lat || p.lon < sw.lon || p.lon > ne.lon {
            return false;
        }
        self.polygons
            .iter()
            .any(|poly| ring_contains(&poly.exterior, p) && !poly.holes.iter().any(|h| ring_contains(h, p)))
    }

    /// A deterministic point inside the commune for generated fleet sensor number `index`:
    /// rejection sampling in the bounding box with the crate's PRNG seeded from
    /// `(seed, code, index)`. Falls back to the centroid only if 10 000 draws all miss.
    pub fn place(&self, index: u64, seed: u64) -> GeoPoint {
        let mut rng = Rng::new(mix(mix(seed, fnv1a64(self.code.as_bytes())), index));
        let (sw, ne) = self.bbox;
        for _ in 0..10_000 {
            let p = GeoPoint { lat: rng.range(sw.lat, ne.lat), lon: rng.range(sw.lon, ne.lon) };
            if self.contains(p) {
                return p;
            }
        }
        self.centroid
    }
}

/// Lower case, accents folded, `œ` → `oe`, punctuation as single spaces, leading article dropped.
pub(crate) fn normalize_name(name: &str) -> String {
    let mut folded = String::with_capacity(name.len());
    for c in name.chars().flat_map(char::to_lowercase) {
        match c {
            'à' | 'â' | 'ä' | 'á' => folded.push('a'),
            'é' | 'è' | 'ê' | 'ë' => folded.push('e'),
            'î' | 'ï' | 'í' => folded.push('i'),
            'ô' | 'ö' | 'ó' => folded.push('o'),
            'ù' | 'û' | 'ü' | 'ú' => folded.push('u'),
            'ç' => folded.push('c'),
            'œ' => folded.push_str("oe"),
            'æ' => folded.push_str("ae"),
            c if c.is_alphanumeric() => folded.push(c),
            _ => folded.push(' '),
        }
    }
    let mut words: Vec<&str> = folded.split_whitespace().collect();
    if words.len() > 1 && matches!(words[0], "le" | "la" | "les" | "l") {
        words.remove(0);
    }
    words.join(" ")
}

fn ring_contains(ring: &[GeoPoint], p: GeoPoint) -> bool {
    let mut inside = false;
    let n = ring.len();
    if n < 3 {
        return false;
    }
    let mut j = n - 1;
    for i in 0..n {
        let (a, b) = (ring[i], ring[j]);
        if (a.lat > p.lat) != (b.lat > p.lat) {
            let lon_at = a.lon + (p.lat - a.lat) / (b.lat - a.lat) * (b.lon - a.lon);
            if p.lon < lon_at {
                inside = !inside;
            }
        }
        j = i;
    }
    inside
}

fn parse_ring(v: &serde_json::Value) -> Option<Vec<GeoPoint>> {
    v.as_array()?
        .iter()
        .map(|pt| {
            let pt = pt.as_array()?;
            Some(GeoPoint { lon: pt.first()?.as_f64()?, lat: pt.get(1)?.as_f64()? })
        })
        .collect()
}

fn parse_polygon(v: &serde_json::Value) -> Option<Polygon> {
    let mut rings = v.as_array()?.iter().map(parse_ring);
    let exterior = rings.next()??;
    let holes = rings.collect::<Option<Vec<_>>>()?;
    Some(Polygon { exterior, holes })
}

fn parse_feature(f: &serde_json::Value) -> Option<District> {
    let props = f.get("properties")?;
    let code = props.get("code")?.as_str()?.to_owned();
    let name = props.get("nom")?.as_str()?.to_owned();
    let geometry = f.get("geometry")?;
    let coords = geometry.get("coordinates")?;
    let polygons = match geometry.get("type")?.as_str()? {
        "Polygon" => vec![parse_polygon(coords)?],
        "MultiPolygon" => coords.as_array()?.iter().map(parse_polygon).collect::<Option<Vec<_>>>()?,
        _ => return None,
    };
    let points = || polygons.iter().flat_map(|p| p.exterior.iter());
    let sw = GeoPoint {
        lat: points().map(|p| p.lat).fold(f64::INFINITY, f64::min),
        lon: points().map(|p| p.lon).fold(f64::INFINITY, f64::min),
    };
    let ne = GeoPoint {
        lat: points().map(|p| p.lat).fold(f64::NEG_INFINITY, f64::max),
        lon: points().map(|p| p.lon).fold(f64::NEG_INFINITY, f64::max),
    };
    let centroid = centroid(&polygons)?;
    Some(District { code, name, centroid, polygons, bbox: (sw, ne) })
}

/// Shoelace centroid over all exterior rings, weighted by area.
fn centroid(polygons: &[Polygon]) -> Option<GeoPoint> {
    let (mut a, mut cx, mut cy) = (0.0, 0.0, 0.0);
    for ring in polygons.iter().map(|p| &p.exterior) {
        for w in ring.windows(2) {
            let cross = w[0].lon * w[1].lat - w[1].lon * w[0].lat;
            a += cross;
            cx += (w[0].lon + w[1].lon) * cross;
            cy += (w[0].lat + w[1].lat) * cross;
        }
    }
    (a.abs() > 0.0).then(|| GeoPoint { lon: cx / (3.0 * a), lat: cy / (3.0 * a) })
}

fn parse_communes(text: &str) -> Vec<District> {
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(text) else {
        return Vec::new();
    };
    let mut out: Vec<District> = doc
        .get("features")
        .and_then(|f| f.as_array())
        .map(|fs| fs.iter().filter_map(parse_feature).collect())
        .unwrap_or_default();
    out.sort_by(|a, b| a.code.cmp(&b.code));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thirty_four_communes_with_fort_de_france() {
        assert_eq!(districts().len(), 34);
        let fdf = district("Fort-de-France").expect("Fort-de-France");
        assert_eq!(fdf.code, "97209");
        assert!(fdf.contains(fdf.centroid) || fdf.contains(fdf.place(0, 1)));
        // Hôtel de Ville area of Fort-de-France.
        assert!(fdf.contains(GeoPoint { lat: 14.6065, lon: -61.0700 }));
        assert!(!fdf.contains(GeoPoint { lat: 14.45, lon: -60.85 }));
    }

    #[test]
    fn names_match_with_articles_accents_and_case() {
        for (query, code) in [
            ("Le Lamentin", "97213"),
            ("lamentin", "97213"),
            ("Le Robert", "97222"),
            ("Sainte-Anne", "97226"),
            ("LE FRANCOIS", "97210"),
            ("Schoelcher", "97229"),
            ("Les Trois-Îlets", "97231"),
            ("L'Ajoupa-Bouillon", "97201"),
            ("Grand'Rivière", "97211"),
            ("97209", "97209"),
        ] {
            assert_eq!(district(query).map(|d| d.code.as_str()), Some(code), "{query}");
        }
        assert!(district("Pointe-à-Pitre").is_none());
        assert!(district("").is_none());
    }

    #[test]
    fn placed_points_are_inside_and_deterministic() {
        for d in districts() {
            for i in 0..5 {
                let p = d.place(i, 42);
                assert!(d.contains(p), "{} #{i} at {p:?}", d.name);
                assert_eq!(p, d.place(i, 42));
            }
            assert_ne!(d.place(0, 42), d.place(1, 42));
            assert_ne!(d.place(0, 42), d.place(0, 43));
        }
    }

    #[test]
    fn raw_files_are_embedded() {
        assert!(OUTLINE_GEOJSON.contains("MultiPolygon"));
        assert!(COMMUNES_GEOJSON.contains("\"nom\":\"Fort-de-France\""));
    }
}
