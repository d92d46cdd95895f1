//! Every `belink.*` setting, in one place.

use std::ffi::CStr;

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

/// UMLS sources (SAB) kept when loading MRCONSO.RRF; empty keeps all.
pub static UMLS_SOURCES: GucSetting<Option<std::ffi::CString>> =
    GucSetting::<Option<std::ffi::CString>>::new(None);
/// UMLS languages (LAT) kept when loading MRCONSO.RRF.
pub static UMLS_LANGUAGES: GucSetting<Option<std::ffi::CString>> =
    GucSetting::<Option<std::ffi::CString>>::new(Some(c"ENG"));

pub fn init() {
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
