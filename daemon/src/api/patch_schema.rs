//! The OpenAPI schema of the config PATCH body, built from the table of settings
//! (`config::settings::SETTINGS`): one object per section with a key the API takes
//! (`NotebookPatch`, ...), each key with its type, range or pattern and its line of doc, and
//! `null` (which reverts a key, or a whole section, to the files' value).

use std::borrow::Cow;

use utoipa::openapi::schema::{
    AdditionalProperties, AnyOfBuilder, ArrayBuilder, KnownFormat, ObjectBuilder, OneOfBuilder,
    Schema, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::{Ref, RefOr};

use crate::config::settings::{self, Kind, Setting};

/// The body of `PATCH /v1/config`: the keys the API takes.
pub struct ConfigPatch;

/// `freeipa.password`: what `boot/credentials.rs: check_password` takes.
const PASSWORD_PATTERN: &str = r"^[^\u0000-\u001f\u007f-\u009f]+$";

/// The name of a section's schema: `notebook` → `NotebookPatch`.
fn section_schema_name(section: &str) -> String {
    let mut chars = section.chars();
    match chars.next() {
        Some(first) => format!("{}{}Patch", first.to_ascii_uppercase(), chars.as_str()),
        None => "Patch".into(),
    }
}

impl utoipa::PartialSchema for ConfigPatch {
    fn schema() -> RefOr<Schema> {
        let mut object = ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "The updatable keys. `null` reverts a key to the value in the config files.",
            ))
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        for section in settings::api_sections() {
            let reference = Ref::from_schema_name(section_schema_name(section));
            object = object.property(
                section,
                OneOfBuilder::new()
                    .item(reference)
                    .item(ObjectBuilder::new().schema_type(Type::Null)),
            );
        }
        object.into()
    }
}

impl utoipa::ToSchema for ConfigPatch {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("ConfigPatch")
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        for section in settings::api_sections() {
            schemas.push((section_schema_name(section), section_schema(section).into()));
        }
    }
}

/// The object of one section: its keys the API takes, nothing else.
fn section_schema(section: &str) -> Schema {
    let mut object = ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::FreeForm(false)));
    for setting in settings::SETTINGS
        .iter()
        .filter(|s| s.through_api() && s.section() == section)
    {
        object = object.property(setting.name(), key_schema(setting));
    }
    object.into()
}

/// A nullable type: `[type, "null"]`.
fn nullable(kind: Type) -> SchemaType {
    SchemaType::from_iter([kind, Type::Null])
}

/// A list, or `null`.
fn nullable_array(doc: &str, items: ObjectBuilder) -> Schema {
    ArrayBuilder::new()
        .schema_type(nullable(Type::Array))
        .description(Some(doc))
        .items(items)
        .into()
}

/// One key: its declared type, range or pattern and doc, or `null`.
pub(crate) fn key_schema(setting: &Setting) -> Schema {
    let doc = Some(setting.doc);
    let string = || {
        let builder = ObjectBuilder::new()
            .schema_type(nullable(Type::String))
            .description(doc);
        if setting.change == settings::Change::ApiOnly {
            builder.write_only(true)
        } else {
            builder
        }
    };
    match setting.kind {
        Kind::Integer { min, max } => ObjectBuilder::new()
            .schema_type(nullable(Type::Integer))
            .description(doc)
            .minimum(Some(min))
            .maximum(Some(max))
            .into(),
        Kind::Bool => ObjectBuilder::new()
            .schema_type(nullable(Type::Boolean))
            .description(doc)
            .into(),
        Kind::Choice(values) => ObjectBuilder::new()
            .schema_type(nullable(Type::String))
            .description(doc)
            .enum_values(Some(
                values
                    .iter()
                    .map(|v| serde_json::Value::from(*v))
                    .chain([serde_json::Value::Null]),
            ))
            .into(),
        Kind::Dn => dn_schema().description(doc).into(),
        Kind::Server => {
            let mut schema = server_schema();
            if let Schema::AnyOf(any_of) = &mut schema {
                any_of.description = doc.map(str::to_string);
            }
            schema
        }
        Kind::UserNames => nullable_array(setting.doc, user_name_schema()),
        Kind::Cidrs => nullable_array(setting.doc, ObjectBuilder::new().schema_type(Type::String)),
        Kind::Secret => string()
            .min_length(Some(1))
            .max_length(Some(crate::boot::credentials::MAX_PASSWORD_CHARS))
            .pattern(Some(PASSWORD_PATTERN))
            .into(),
        Kind::Pem
        | Kind::Text
        | Kind::Path
        | Kind::Address
        | Kind::DnsName
        | Kind::SocketAddress
        | Kind::Url => string().into(),
    }
}

/// A user name of `hub.admin_users`: the config's rule (`config::rules::is_username`).
pub(crate) fn user_name_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(crate::config::USER_NAME_PATTERN))
        .min_length(Some(1))
        .max_length(Some(255))
}

/// `freeipa.base_dn` and `bind_dn`: the config's DN rule (`config::rules::check_dn`) as a
/// pattern, or `null`.
pub(crate) fn dn_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(nullable(Type::String))
        .pattern(Some(crate::config::DN_PATTERN))
}

/// `freeipa.server`: the config's rule (`config::rules::is_host_port`), or `null`.
pub(crate) fn server_schema() -> Schema {
    AnyOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(crate::config::SERVER_PATTERN)),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Ipv6))),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(crate::config::SERVER_V6_PATTERN)),
        )
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .build()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key the API takes is in the served document with the table's range, choices and
    /// doc, and `null`: a JSON Schema validator on the document agrees with the table.
    #[test]
    fn the_patch_schema_declares_the_tables_ranges_and_choices() {
        let document = serde_json::to_value(crate::api::openapi()).unwrap();
        let schemas = &document["components"]["schemas"];
        let mut checked = 0;
        for setting in settings::SETTINGS.iter().filter(|s| s.through_api()) {
            let name = section_schema_name(setting.section());
            let schema = &schemas[name.as_str()]["properties"][setting.name()];
            assert!(schema.is_object(), "{} is not in {name}", setting.key);
            let validator = jsonschema::options()
                .should_validate_formats(true)
                .build(schema)
                .unwrap();
            assert!(
                validator.is_valid(&serde_json::Value::Null),
                "{}",
                setting.key
            );
            let description = schema["description"].as_str();
            assert_eq!(description, Some(setting.doc), "{}", setting.key);
            match setting.kind {
                Kind::Integer { min, max } => {
                    for (value, valid) in [
                        (i64::from(min) - 1, false),
                        (i64::from(min), true),
                        (i64::from(max), true),
                        (i64::from(max) + 1, false),
                    ] {
                        assert_eq!(
                            validator.is_valid(&serde_json::Value::from(value)),
                            valid,
                            "{} = {value}",
                            setting.key
                        );
                    }
                    assert!(!validator.is_valid(&serde_json::Value::from("1")));
                }
                Kind::Choice(values) => {
                    for value in values {
                        assert!(validator.is_valid(&serde_json::Value::from(*value)));
                    }
                    assert!(!validator.is_valid(&serde_json::Value::from("none-of-these")));
                }
                Kind::Bool => {
                    assert!(validator.is_valid(&serde_json::Value::from(false)));
                    assert!(!validator.is_valid(&serde_json::Value::from("false")));
                }
                _ => {}
            }
            let write_only = schema["writeOnly"].as_bool().unwrap_or(false);
            assert_eq!(
                write_only,
                setting.change == settings::Change::ApiOnly,
                "{}",
                setting.key
            );
            checked += 1;
        }
        assert_eq!(checked, settings::api_keys().count());
        // Nothing else: a section's object has exactly the table's keys.
        let documented: usize = settings::api_sections()
            .iter()
            .map(|section| {
                schemas[section_schema_name(section).as_str()]["properties"]
                    .as_object()
                    .map_or(0, serde_json::Map::len)
            })
            .sum();
        assert_eq!(documented, checked);
    }
}
