//! Every key the config file accepts, listed from the parsers themselves: the serde structs'
//! own field lists (read through a deserializer that only records them) and the key lists
//! the table parsers enforce with `only_keys`. The docs test checks the reference against it.

use serde::de::{self, Deserialize, Deserializer, Visitor};

use super::{AdminSettings, ProxyAuth, ProxySettings, RawConfig, TransparentSettings, aws, resolver, route};

/// `(table header as written in a file, key)`, e.g. `("[proxy]", "listen")`; keys of an
/// inline table are dotted (`("[proxy]", "auth.username")`).
pub fn keys() -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let mut add = |table: &'static str, keys: &[&str]| out.extend(keys.iter().map(|k| (table, (*k).to_owned())));
    for section in fields_of::<RawConfig>() {
        match *section {
            "proxy" => {
                add("[proxy]", fields_of::<ProxySettings>());
                let auth: Vec<String> = fields_of::<ProxyAuth>().iter().map(|k| format!("auth.{k}")).collect();
                add("[proxy]", &auth.iter().map(String::as_str).collect::<Vec<_>>());
            }
            "admin" => add("[admin]", fields_of::<AdminSettings>()),
            "transparent" => add("[transparent]", fields_of::<TransparentSettings>()),
            "resolver" => add("[resolver.NAME]", resolver::KEYS),
            "route" => {
                add("[[route]]", route::KEYS);
                let rule: Vec<String> = fields_of::<route::RawCnameRule>()
                    .iter()
                    .map(|k| format!("on_cname.{k}"))
                    .collect();
                add("[[route]]", &rule.iter().map(String::as_str).collect::<Vec<_>>());
            }
            "aws" => {
                add("[aws]", aws::KEYS);
                add("[[aws.peered]]", fields_of::<aws::Peer>());
            }
            other => panic!("config table `{other}` has no entry in config::schema::keys: list its keys there"),
        }
    }
    out
}

/// The field names `T`'s derived `Deserialize` accepts (after renames).
fn fields_of<T: for<'de> Deserialize<'de>>() -> &'static [&'static str] {
    let mut found = None;
    let _ = T::deserialize(FieldCatcher(&mut found));
    found.unwrap_or_else(|| panic!("{} is not a serde struct", std::any::type_name::<T>()))
}

/// A deserializer that records the field list `deserialize_struct` is given, then fails.
struct FieldCatcher<'a>(&'a mut Option<&'static [&'static str]>);

impl<'de> Deserializer<'de> for FieldCatcher<'_> {
    type Error = de::value::Error;

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = Some(fields);
        Err(de::Error::custom("fields recorded"))
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_table_is_listed_with_its_keys() {
        let keys = super::keys();
        let has = |table: &str, key: &str| keys.iter().any(|(t, k)| *t == table && k == key);
        for (table, key) in [
            ("[proxy]", "listen"),
            ("[proxy]", "auth.password"),
            ("[admin]", "debug"),
            ("[transparent]", "exclude_uid"),
            ("[resolver.NAME]", "cache_size"),
            ("[[route]]", "via_password_file"),
            ("[[route]]", "on_cname.match"),
            ("[aws]", "public_via_target"),
            ("[[aws.peered]]", "vpc_endpoint"),
        ] {
            assert!(has(table, key), "{table} {key} missing from {keys:?}");
        }
    }
}
