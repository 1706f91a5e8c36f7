//! The words of a viscript line: white space between words, `'single'` and `"double"` quotes
//! (backslash escapes inside double quotes), `#` comments; and the way back, from words to a
//! line that reads as the same words.

use std::borrow::Cow;

/// Why a line could not be split into words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyntaxError {
    /// A quote was opened and never closed.
    #[error("the {} quote opened at column {column} is not closed: close it, or escape a double quote inside double quotes as \\\"", quote_name(*.quote))]
    UnterminatedQuote {
        /// `'` or `"`.
        quote: char,
        /// Where it opens, counted in characters from 1.
        column: usize,
    },
    /// A backslash inside double quotes is followed by a character it does not escape.
    #[error("unknown escape \\{escape} at column {column}: inside double quotes write \\\\ for a backslash, \\\" for a double quote, \\n for a new line, \\t for a tab")]
    UnknownEscape {
        /// The character after the backslash.
        escape: char,
        /// Where the backslash is, counted in characters from 1.
        column: usize,
    },
}

fn quote_name(quote: char) -> &'static str {
    if quote == '\'' {
        "single"
    } else {
        "double"
    }
}

/// Splits a line into words.
///
/// Words are separated by white space. Inside single quotes every character is itself; inside
/// double quotes a backslash escapes `\`, `"`, `'`, and writes a new line, tab or carriage return
/// as `\n`, `\t`, `\r`. Quoted and unquoted parts next to each other make one word, and `""` is an
/// empty word. A `#` that starts a word starts a comment, which runs to the end of the line.
/// Outside quotes a backslash is an ordinary character.
pub fn tokenize(line: &str) -> Result<Vec<String>, SyntaxError> {
    let mut words = Vec::new();
    let mut chars = line.chars().enumerate().peekable();
    loop {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        match chars.peek() {
            None | Some((_, '#')) => return Ok(words),
            Some(_) => {}
        }
        let mut word = String::new();
        while let Some((index, c)) = chars.next_if(|(_, c)| !c.is_whitespace()) {
            match c {
                '\'' => loop {
                    match chars.next() {
                        Some((_, '\'')) => break,
                        Some((_, c)) => word.push(c),
                        None => {
                            return Err(SyntaxError::UnterminatedQuote {
                                quote: '\'',
                                column: index + 1,
                            })
                        }
                    }
                },
                '"' => loop {
                    let unterminated = SyntaxError::UnterminatedQuote {
                        quote: '"',
                        column: index + 1,
                    };
                    match chars.next() {
                        Some((_, '"')) => break,
                        Some((backslash, '\\')) => match chars.next() {
                            Some((_, escaped @ ('\\' | '"' | '\''))) => word.push(escaped),
                            Some((_, 'n')) => word.push('\n'),
                            Some((_, 't')) => word.push('\t'),
                            Some((_, 'r')) => word.push('\r'),
                            Some((_, escape)) => {
                                return Err(SyntaxError::UnknownEscape {
                                    escape,
                                    column: backslash + 1,
                                })
                            }
                            None => return Err(unterminated),
                        },
                        Some((_, c)) => word.push(c),
                        None => return Err(unterminated),
                    }
                },
                c => word.push(c),
            }
        }
        words.push(word);
    }
}

/// Writes `word` so that [`tokenize`] reads it back as one word: as it is when it needs no
/// quoting, in double quotes with escapes otherwise.
pub fn quote(word: &str) -> Cow<'_, str> {
    let plain = !word.is_empty()
        && !word.starts_with('#')
        && !word
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '\'' || c == '"');
    if plain {
        return Cow::Borrowed(word);
    }
    let mut quoted = String::with_capacity(word.len() + 2);
    quoted.push('"');
    for c in word.chars() {
        match c {
            '\\' => quoted.push_str("\\\\"),
            '"' => quoted.push_str("\\\""),
            '\n' => quoted.push_str("\\n"),
            '\t' => quoted.push_str("\\t"),
            '\r' => quoted.push_str("\\r"),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    Cow::Owned(quoted)
}

/// Joins words into one line that [`tokenize`] splits back into the same words.
pub fn join_words<S: AsRef<str>>(words: &[S]) -> String {
    let mut line = String::new();
    for (index, word) in words.iter().enumerate() {
        if index > 0 {
            line.push(' ');
        }
        line.push_str(&quote(word.as_ref()));
    }
    line
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const KEY_A: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

    fn words(line: &str) -> Vec<String> {
        tokenize(line).unwrap()
    }

    #[test]
    fn tokenizer_splits_on_white_space() {
        assert_eq!(words("  status  "), ["status"]);
        assert_eq!(words("build_route a\tb  c"), ["build_route", "a", "b", "c"]);
        assert!(words("").is_empty());
        assert!(words(" \t ").is_empty());
    }

    #[test]
    fn tokenizer_reads_quotes_and_escapes() {
        assert_eq!(words("msg 'hello world'"), ["msg", "hello world"]);
        assert_eq!(words(r#"msg "say \"hi\"""#), ["msg", "say \"hi\""]);
        assert_eq!(
            words(r#""a\\b" "tab\there" "nl\nx" "cr\r" "q\'""#),
            ["a\\b", "tab\there", "nl\nx", "cr\r", "q'"]
        );
        assert_eq!(words(r"'no \escape in single'"), [r"no \escape in single"]);
        assert_eq!(words(r#"ab"c d"'e f'g"#), ["abc de fg"]);
        assert_eq!(words(r#"'' """#), ["", ""]);
        assert_eq!(words(r"a\b"), [r"a\b"]);
        assert_eq!(words(r#"'say "hi"'"#), [r#"say "hi""#]);
        assert_eq!(words("\"it's\""), ["it's"]);
    }

    #[test]
    fn tokenizer_skips_comments() {
        assert!(words("# only a comment").is_empty());
        assert!(words("   #indented comment").is_empty());
        assert_eq!(words("status # why not"), ["status"]);
        assert_eq!(words("a#b '#c' \"#d\""), ["a#b", "#c", "#d"]);
    }

    #[test]
    fn tokenizer_reports_unterminated_quotes_and_unknown_escapes() {
        assert_eq!(
            tokenize("msg 'hello"),
            Err(SyntaxError::UnterminatedQuote {
                quote: '\'',
                column: 5
            })
        );
        assert_eq!(
            tokenize("msg \"hello"),
            Err(SyntaxError::UnterminatedQuote {
                quote: '"',
                column: 5
            })
        );
        assert_eq!(
            tokenize("\"ends in a backslash\\"),
            Err(SyntaxError::UnterminatedQuote {
                quote: '"',
                column: 1
            })
        );
        assert_eq!(
            tokenize(r#"é "\q""#),
            Err(SyntaxError::UnknownEscape {
                escape: 'q',
                column: 4
            })
        );
        let message = tokenize("'x").unwrap_err().to_string();
        assert!(
            message.contains("single quote opened at column 1 is not closed"),
            "{message}"
        );
    }

    #[test]
    fn quoting_round_trips() {
        let cases: &[&[&str]] = &[
            &["status"],
            &["msg", "hello world"],
            &[
                "a'b",
                "c\"d",
                "e\\f",
                "",
                "#not a comment",
                "tab\there",
                "nl\nline",
                "cr\r",
            ],
            &["ü ñ", "plain+/=", "a#b"],
        ];
        for case in cases {
            let line = join_words(case);
            assert!(!line.contains('\n'), "{line:?}");
            assert_eq!(tokenize(&line).unwrap(), *case, "{line:?}");
        }
        assert_eq!(quote("status"), "status");
        assert_eq!(quote(KEY_A), KEY_A);
    }
}
