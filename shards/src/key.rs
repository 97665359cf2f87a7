//! Key values parsed from their text or binary wire form.

/// A sharding key value, parsed per its `DataType`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// bigint, integer and smallint (Postgres hashes equal values alike).
    Int(i64),
    /// text and varchar: the bytes as the server would store them.
    Text(Vec<u8>),
    Uuid([u8; 16]),
}

/// Why a key value could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// The bytes are not a value of the key's type.
    Invalid {
        data_type: &'static str,
        reason: String,
    },
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyError::Invalid { data_type, reason } => {
                write!(f, "invalid {data_type} sharding key: {reason}")
            }
        }
    }
}

impl std::error::Error for KeyError {}
