//! What a principal name may look like before it is put in a SASL token.

/// Non-empty, no control characters, at most `max_length` bytes of UTF-8.
pub fn validate_principal(name: &str, max_length: usize) -> Result<(), String> {
    if name.is_empty() {
        return Err("principal is empty".to_string());
    }
    if name.len() > max_length {
        return Err(format!(
            "principal is {} bytes, more than the maximum {max_length}",
            name.len()
        ));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(format!(
            "principal {name:?} contains the control character U+{:04X}",
            u32::from(c)
        ));
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
            .contains("U+000A"));
        assert!(validate_principal("a\u{85}", 255).is_err());
        assert!(validate_principal("abc", 2).is_err());
        assert!(validate_principal("é", 2).is_ok());
    }
}
