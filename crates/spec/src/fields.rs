//! The subscriber fields that workflow files may name: in `where` filters, segment
//! definitions and template variables. This catalogue is the contract between the workflow
//! language and the `subscriber` table: every name here is a column of that table.

/// The type of a subscriber field, as the filter language sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    Text,
    Integer,
    Number,
    Bool,
}

/// One subscriber field.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub ty: FieldType,
    /// For enumerated text fields, the values allowed; empty means free text.
    pub values: &'static [&'static str],
    /// Whether the column may be NULL.
    pub nullable: bool,
    pub doc: &'static str,
}

const fn f(name: &'static str, ty: FieldType, doc: &'static str) -> Field {
    Field {
        name,
        ty,
        values: &[],
        nullable: false,
        doc,
    }
}

pub const BRANDS: &[&str] = &["gotone", "mzone", "easyown"];
pub const VALUE_TIERS: &[&str] = &["diamond", "gold", "silver", "ordinary"];
pub const STUDENT_STAGES: &[&str] = &["none", "freshman", "student", "graduate"];
pub const CONTACT_CHANNELS: &[&str] = &["sms", "outbound_call", "service", "email"];
pub const GENDERS: &[&str] = &["female", "male", "unknown"];

/// Every field, in table column order.
pub const SUBSCRIBER_FIELDS: &[Field] = &[
    f(
        "msisdn",
        FieldType::Text,
        "Mobile number, digits only, e.g. 13800138000.",
    ),
    Field {
        nullable: true,
        ..f(
            "external_id",
            FieldType::Text,
            "Id in the source system an import came from.",
        )
    },
    f("name", FieldType::Text, "Display name used in greetings."),
    Field {
        values: GENDERS,
        ..f("gender", FieldType::Text, "female, male or unknown.")
    },
    f("age", FieldType::Integer, "Age in years."),
    f(
        "region",
        FieldType::Text,
        "City or prefecture of the subscriber's home area.",
    ),
    Field {
        values: BRANDS,
        ..f(
            "brand",
            FieldType::Text,
            "gotone (flagship), mzone (youth) or easyown (mass market).",
        )
    },
    Field {
        values: VALUE_TIERS,
        ..f(
            "value_tier",
            FieldType::Text,
            "Value tier by 3-month ARPU: diamond > 500, gold 200-500, silver 120-200, ordinary < 120 yuan.",
        )
    },
    f(
        "arpu_3m",
        FieldType::Number,
        "Average revenue per user over the last 3 months, yuan per month.",
    ),
    f(
        "balance",
        FieldType::Number,
        "Current prepaid balance, yuan.",
    ),
    f(
        "tenure_months",
        FieldType::Integer,
        "Months since activation.",
    ),
    Field {
        values: STUDENT_STAGES,
        ..f(
            "student_stage",
            FieldType::Text,
            "none, freshman, student or graduate.",
        )
    },
    Field {
        nullable: true,
        ..f(
            "campus",
            FieldType::Text,
            "Campus the subscriber is seen at, if any.",
        )
    },
    Field {
        values: CONTACT_CHANNELS,
        ..f(
            "first_channel",
            FieldType::Text,
            "First-choice contact channel.",
        )
    },
    f(
        "first_channel_slot",
        FieldType::Text,
        "Usual time slot on the first-choice channel, HH:MM-HH:MM.",
    ),
    Field {
        values: CONTACT_CHANNELS,
        ..f(
            "second_channel",
            FieldType::Text,
            "Second-choice contact channel.",
        )
    },
    f(
        "second_channel_slot",
        FieldType::Text,
        "Usual time slot on the second-choice channel, HH:MM-HH:MM.",
    ),
    f(
        "complaints_30d",
        FieldType::Integer,
        "Complaints in the last 30 days.",
    ),
    f(
        "do_not_disturb",
        FieldType::Bool,
        "On the operator's do-not-disturb list.",
    ),
    f(
        "churn_risk",
        FieldType::Number,
        "Churn risk score from 0 (loyal) to 1 (leaving).",
    ),
    Field {
        nullable: true,
        ..f(
            "timezone",
            FieldType::Text,
            "IANA time zone; the campaign's zone when empty.",
        )
    },
    f(
        "opt_out",
        FieldType::Bool,
        "Opted out of marketing contact; never contacted while true.",
    ),
];

/// Looks a field up by name.
pub fn field(name: &str) -> Option<&'static Field> {
    SUBSCRIBER_FIELDS.iter().find(|f| f.name == name)
}

/// The field names, for "expected one of" messages.
pub fn field_names() -> Vec<&'static str> {
    SUBSCRIBER_FIELDS.iter().map(|f| f.name).collect()
}
