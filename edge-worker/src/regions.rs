//! Which Durable Objects hold an edge's envelope, and which one an isolate reads from. Plain
//! Rust, tested natively.
//!
//! Without `REGIONS`, one object named `config` holds it, as edges always had. With `REGIONS`
//! (location hints, e.g. `wnam,weur,apac`), one object per hint, created there; the Worker that
//! takes a push writes it to all of them, and each isolate reads from the one of its region
//! (docs/edge.md, "At hundreds of locations").

/// Cloudflare's Durable Object location hints.
pub const LOCATION_HINTS: [&str; 9] =
    ["wnam", "enam", "sam", "weur", "eeur", "apac", "oc", "afr", "me"];

/// The object name of the single-object design.
const SINGLE: &str = "config";

/// A Durable Object holding the envelope: its name, and the location hint it is created with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    pub object: String,
    pub hint: Option<String>,
}

/// The regions `REGIONS` names (comma-separated location hints), or the single object when it
/// is unset or empty.
pub fn parse(regions: Option<&str>) -> Result<Vec<Region>, String> {
    let hints: Vec<&str> =
        regions.unwrap_or("").split(',').map(str::trim).filter(|hint| !hint.is_empty()).collect();
    if hints.is_empty() {
        return Ok(vec![Region { object: SINGLE.into(), hint: None }]);
    }
    let mut parsed: Vec<Region> = Vec::with_capacity(hints.len());
    for hint in hints {
        if !LOCATION_HINTS.contains(&hint) {
            return Err(format!(
                "REGIONS: `{hint}` is not a location hint ({})",
                LOCATION_HINTS.join(", ")
            ));
        }
        if parsed.iter().all(|region| region.hint.as_deref() != Some(hint)) {
            parsed.push(Region { object: format!("{SINGLE}-{hint}"), hint: Some(hint.into()) });
        }
    }
    Ok(parsed)
}

/// The region an isolate reads from: `forced` (the `REGION` var) if it is one of `regions`,
/// else the one for the continent and longitude of the client (`request.cf`; Cloudflare routes a
/// client to a data center near it), else the first.
pub fn choose<'r>(
    regions: &'r [Region],
    forced: Option<&str>,
    continent: Option<&str>,
    longitude: Option<f64>,
) -> &'r Region {
    let named = |hint: &str| regions.iter().find(|region| region.hint.as_deref() == Some(hint));
    let nearest = continent.and_then(|continent| {
        let candidates: &[&str] = match (continent, longitude) {
            ("NA", Some(longitude)) if longitude < -100.0 => &["wnam", "enam"],
            ("NA", _) => &["enam", "wnam"],
            ("SA", _) => &["sam", "enam"],
            ("EU", Some(longitude)) if longitude > 20.0 => &["eeur", "weur"],
            ("EU", _) => &["weur", "eeur"],
            // Cloudflare's continent for the Middle East is Asia.
            ("AS", Some(longitude)) if (34.0..=60.0).contains(&longitude) => {
                &["me", "eeur", "apac"]
            }
            ("AS", _) => &["apac", "me"],
            ("OC", _) => &["oc", "apac"],
            ("AF", _) => &["afr", "weur"],
            _ => &[],
        };
        candidates.iter().find_map(|hint| named(hint))
    });
    forced.and_then(named).or(nearest).unwrap_or(&regions[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_regions_one_object_holds_the_envelope_as_before() {
        assert_eq!(parse(None).unwrap(), [Region { object: "config".into(), hint: None }]);
        assert_eq!(parse(Some(" ")).unwrap(), parse(None).unwrap());
    }

    #[test]
    fn regions_are_location_hints_each_once() {
        let regions = parse(Some("weur, apac,weur")).unwrap();
        let objects: Vec<&str> = regions.iter().map(|r| r.object.as_str()).collect();
        assert_eq!(objects, ["config-weur", "config-apac"]);
        assert_eq!(regions[1].hint.as_deref(), Some("apac"));
        let error = parse(Some("weur,mars")).unwrap_err();
        assert!(error.contains("`mars` is not a location hint"), "{error}");
    }

    #[test]
    fn an_isolate_reads_from_its_regions_object() {
        let regions = parse(Some("wnam,enam,weur,apac")).unwrap();
        let chosen = |forced, continent, longitude| {
            choose(&regions, forced, continent, longitude).hint.clone().unwrap()
        };
        assert_eq!(chosen(None, Some("NA"), Some(-122.4)), "wnam");
        assert_eq!(chosen(None, Some("NA"), Some(-74.0)), "enam");
        assert_eq!(chosen(None, Some("EU"), Some(2.3)), "weur");
        // No eeur object: the next nearest.
        assert_eq!(chosen(None, Some("EU"), Some(37.6)), "weur");
        assert_eq!(chosen(None, Some("AS"), Some(139.7)), "apac");
        assert_eq!(chosen(None, Some("OC"), Some(151.2)), "apac");
        // Nothing to go by: the first.
        assert_eq!(chosen(None, None, None), "wnam");
        assert_eq!(chosen(None, Some("AN"), None), "wnam");
        assert_eq!(chosen(Some("apac"), Some("NA"), Some(-122.4)), "apac");
        assert_eq!(chosen(Some("oc"), Some("NA"), Some(-122.4)), "wnam", "not a region here");
    }
}
