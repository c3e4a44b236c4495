//! Config files: any text is either a config or an error naming where it went wrong,
//! never a panic (validate(), the route table and `describe` included).
#![no_main]

use libfuzzer_sys::fuzz_target;
use splitway::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    match Config::from_toml(s, "fuzz.toml") {
        Ok(config) => drop(splitway::config::describe(&config)),
        Err(e) => drop(e.to_string()),
    }
});
