//! What a principal name may look like before it is put in a SASL token.

use std::fmt;

/// Why a name cannot be a principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalError {
    Empty,
    TooLong { length: usize, max: usize },
    ControlCharacter { principal: String, character: char },
}

impl fmt::Display for PrincipalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrincipalError::Empty => f.write_str("principal is empty"),
            PrincipalError::TooLong { length, max } => write!(
                f,
                "principal is {length} bytes, more than the maximum {max}"
            ),
            PrincipalError::ControlCharacter {
                principal,
                character,
            } => write!(
                f,
                "principal {principal:?} contains the control character U+{:04X}",
                u32::from(*character)
            ),
        }
    }
}

impl std::error::Error for PrincipalError {}

/// Non-empty, no control characters, at most `max_length` bytes of UTF-8.
pub fn validate_principal(name: &str, max_length: usize) -> Result<(), PrincipalError> {
    if name.is_empty() {
        return Err(PrincipalError::Empty);
    }
    if name.len() > max_length {
        return Err(PrincipalError::TooLong {
            length: name.len(),
            max: max_length,
        });
    }
    if let Some(character) = name.chars().find(|c| c.is_control()) {
        return Err(PrincipalError::ControlCharacter {
            principal: name.to_owned(),
            character,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        assert!(validate_principal("User:x", 255).is_ok());
        assert!(validate_principal("", 255).is_err());
        assert!(validate_principal("a\nb", 255)
            .unwrap_err()
            .to_string()
            .contains("U+000A"));
        assert!(validate_principal("a\u{85}", 255).is_err());
        assert!(validate_principal("abc", 2).is_err());
        assert!(validate_principal("é", 2).is_ok());
    }
}
