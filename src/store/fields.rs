//! The fields a filter may name, as each kind declares them (`Kind::FIELDS`): a name, what
//! it holds, and its SQL column (the same as the name unless said otherwise).

/// What a filter field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    Text,
    Bool,
    Int,
    Time,
    /// A list of strings (`permissions`): `:` only.
    TextList,
    /// Any of a user's email addresses, case-insensitively: `=` or `:` (no column of its own).
    Email,
    /// Text compared with ASCII letters folded (an invitation's address): set, `=`, `!=`, `:`,
    /// wildcards.
    FoldedText,
    /// A metadata object (`public_metadata`…), followed by a path into it.
    Json,
}

/// A field: its filter name, type, and SQL column (also its key in the record's JSON state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    pub kind: FieldType,
    pub column: &'static str,
}

impl Field {
    const fn of(name: &'static str, kind: FieldType) -> Field {
        Field {
            name,
            kind,
            column: name,
        }
    }
    pub const fn text(name: &'static str) -> Field {
        Field::of(name, FieldType::Text)
    }
    pub const fn boolean(name: &'static str) -> Field {
        Field::of(name, FieldType::Bool)
    }
    pub const fn int(name: &'static str) -> Field {
        Field::of(name, FieldType::Int)
    }
    pub const fn time(name: &'static str) -> Field {
        Field::of(name, FieldType::Time)
    }
    pub const fn text_list(name: &'static str) -> Field {
        Field::of(name, FieldType::TextList)
    }
    pub const fn email(name: &'static str) -> Field {
        Field {
            name,
            kind: FieldType::Email,
            column: "",
        }
    }
    pub const fn folded_text(name: &'static str) -> Field {
        Field::of(name, FieldType::FoldedText)
    }
    pub const fn json(name: &'static str) -> Field {
        Field::of(name, FieldType::Json)
    }
    /// The same field, read from another column.
    pub const fn column(self, column: &'static str) -> Field {
        Field { column, ..self }
    }
}
