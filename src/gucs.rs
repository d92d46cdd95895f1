//! Every `belink.*` setting, in one place.

use std::ffi::CStr;

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

/// UMLS sources (SAB) kept when loading MRCONSO.RRF; empty keeps all.
pub static UMLS_SOURCES: GucSetting<Option<std::ffi::CString>> =
    GucSetting::<Option<std::ffi::CString>>::new(None);
/// UMLS languages (LAT) kept when loading MRCONSO.RRF.
pub static UMLS_LANGUAGES: GucSetting<Option<std::ffi::CString>> =
    GucSetting::<Option<std::ffi::CString>>::new(Some(c"ENG"));

/// Minimum pg_trgm similarity for a trigram candidate.
pub static TRIGRAM_THRESHOLD: GucSetting<f64> = GucSetting::<f64>::new(0.3);

pub fn init() {
    GucRegistry::define_float_guc(
        c"belink.trigram_threshold",
        c"Minimum trigram similarity (pg_trgm) of a name to a mention for the name to be a candidate.",
        c"Lower finds more distant names, at the cost of speed.",
        &TRIGRAM_THRESHOLD,
        0.0,
        1.0,
        GucContext::Userset,
        GucFlags::empty(),
    );
    GucRegistry::define_string_guc(
        c"belink.umls_sources",
        c"UMLS sources (SAB) kept when loading MRCONSO.RRF, comma-separated; empty keeps every source.",
        c"Overridden by the sources argument of belink_load_ontology. Example: 'MSH,SNOMEDCT_US,OMIM'.",
        &UMLS_SOURCES,
        GucContext::Userset,
        GucFlags::empty(),
    );
    GucRegistry::define_string_guc(
        c"belink.umls_languages",
        c"UMLS languages (LAT) kept when loading MRCONSO.RRF, comma-separated; empty keeps every language.",
        c"Overridden by the languages argument of belink_load_ontology.",
        &UMLS_LANGUAGES,
        GucContext::Userset,
        GucFlags::empty(),
    );
}

/// A comma-separated list setting as its items.
pub fn list(setting: &GucSetting<Option<std::ffi::CString>>) -> Vec<String> {
    setting
        .get()
        .as_deref()
        .map(CStr::to_string_lossy)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}
