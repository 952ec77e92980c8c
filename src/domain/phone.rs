//! Phone numbers as whatan accepts them: strict international input, E.164 out.
//!
//! Every recipient the API or the admin CLI is given goes through
//! [`Phone::parse`], so a message is only ever queued for a number that is
//! written unambiguously and exists in a real numbering plan. Parsing has two
//! stages:
//!
//! 1. A strict pre-check of the raw text. Only ASCII digits, spaces, `-`, `.`,
//!    `(`, `)` and one international prefix (a single leading `+`, or a
//!    leading `00`) are allowed, with 7 to 15 digits after the prefix. This
//!    stage exists because the `phonenumber` crate is a lenient, "find a
//!    number in this text" parser: on its own it accepts `++91…`,
//!    `tel:+91…` URIs, keypad letters (`+1-800-FLOWERS`, or a mistyped `O`
//!    for `0`, both silently turned into digits) and silently drops
//!    extensions (`x123`, `#`). None of that may reach it.
//! 2. Validation of the resulting `+digits` against the numbering-plan
//!    metadata shipped with the `phonenumber` crate (a libphonenumber port),
//!    with no default region.
//!
//! People write a national trunk prefix after the country code
//! (`+44 (0)20 7946 0958`, `+91 0 70000 00001`); libphonenumber drops it,
//! and so do we, exactly where it does (the contract's rule): when the
//! library's reading of the digits is a valid number, that reading is the
//! number (`+442079460958`). The library also mangles some correctly
//! written numbers: it takes the leading `8` of every Russian/Kazakh
//! `+7 8xx…` number (St Petersburg's `+7 812…`, toll-free `+7 800…`) and of
//! Belarusian and Lithuanian `8…` numbers for a trunk prefix and strips it.
//! So digits that are valid as written are kept as written, and the
//! library's reading is used only when they are not. A national number with
//! no country code (`07911 123456`) is still refused: no `+` or `00`.

use std::fmt;

use phonenumber::metadata::DATABASE;
use phonenumber::Type;

/// Longest raw input accepted, in characters, before any trimming.
const MAX_RAW_CHARS: usize = 64;
/// Fewest digits (country code included) after the international prefix.
const MIN_DIGITS: usize = 7;
/// Most digits (country code included) after the international prefix (E.164).
const MAX_DIGITS: usize = 15;
/// Country calling codes are 1 to 3 digits long.
const MAX_COUNTRY_CODE_DIGITS: usize = 3;

/// The number types a valid number must match one of, as in the library's
/// own validity check.
const VALID_TYPES: [Type; 10] = [
    Type::PremiumRate,
    Type::TollFree,
    Type::SharedCost,
    Type::Voip,
    Type::PersonalNumber,
    Type::Pager,
    Type::Uan,
    Type::Voicemail,
    Type::FixedLine,
    Type::Mobile,
];

/// A validated phone number, stored in E.164 form (e.g. `+917999709798`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Phone {
    e164: String,
}

impl Phone {
    /// Parse a phone number given by an API client or the admin CLI.
    ///
    /// Accepts international numbers only (`+` or `00`, then the country
    /// code), optionally grouped with spaces, `-`, `.`, `(` and `)`, and
    /// returns the number in E.164 form. See the module documentation for
    /// the exact rules.
    pub fn parse(raw: &str) -> Result<Phone, PhoneError> {
        let digits = precheck(raw)?;
        validate(&digits).map(|e164| Phone { e164 })
    }

    /// The number in E.164 form, e.g. `+917999709798`.
    pub fn e164(&self) -> &str {
        &self.e164
    }

    /// The E.164 digits without the leading `+`, e.g. `917999709798`.
    pub fn digits(&self) -> &str {
        self.e164.strip_prefix('+').unwrap_or(&self.e164)
    }
}

impl fmt::Display for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.e164)
    }
}

/// Why a phone number was refused: a human-readable message that does not
/// name the field (the caller prefixes it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneError(pub String);

impl PhoneError {
    fn new(message: impl Into<String>) -> PhoneError {
        PhoneError(message.into())
    }
}

impl fmt::Display for PhoneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PhoneError {}

const NOT_INTERNATIONAL: &str =
    "must be in international format, starting with + or 00 and the country code";

/// Stage 1: the strict textual check. Returns the digits after the
/// international prefix (country code first).
fn precheck(raw: &str) -> Result<String, PhoneError> {
    // Bounded count, so a huge input is not walked in full.
    let length = raw.chars().take(MAX_RAW_CHARS + 1).count();
    if length > MAX_RAW_CHARS {
        return Err(PhoneError::new(format!(
            "is too long (more than {MAX_RAW_CHARS} characters)"
        )));
    }

    let text = raw.trim_matches(|c: char| c.is_ascii_whitespace());
    if text.is_empty() {
        return Err(PhoneError::new("is empty"));
    }

    for (index, c) in text.char_indices() {
        match c {
            '0'..='9' | ' ' | '-' | '.' | '(' | ')' => {}
            '+' if index == 0 => {}
            '+' => {
                return Err(PhoneError::new(
                    "has a + that is not the first character; \
                     write one + followed by the country code",
                ))
            }
            c if c.is_ascii_alphabetic() => {
                return Err(PhoneError::new(format!(
                    "contains a letter ({c:?}); only digits are accepted \
                     (no keypad letters, tel: prefixes or extensions)"
                )))
            }
            '#' | ';' | ',' | '*' => {
                return Err(PhoneError::new(format!(
                    "contains {c:?}; extensions, pauses and service codes are not accepted"
                )))
            }
            c if c.is_whitespace() => {
                return Err(PhoneError::new(format!(
                    "contains {c:?}; only plain spaces may separate digit groups"
                )))
            }
            c if c.is_numeric() => {
                return Err(PhoneError::new(format!(
                    "contains the non-ASCII digit {c:?}; use the digits 0-9"
                )))
            }
            c => {
                return Err(PhoneError::new(format!(
                    "contains {c:?}, which is not allowed; use digits, spaces, \
                     '-', '.', '(', ')' and a leading + or 00"
                )))
            }
        }
    }

    let rest = if let Some(rest) = text.strip_prefix('+') {
        rest
    } else if let Some(rest) = text.strip_prefix("00") {
        rest
    } else {
        return Err(PhoneError::new(NOT_INTERNATIONAL));
    };

    let digits: String = rest.chars().filter(char::is_ascii_digit).collect();
    if digits.len() < MIN_DIGITS || digits.len() > MAX_DIGITS {
        return Err(PhoneError::new(format!(
            "has {} digits; international numbers have {MIN_DIGITS} to {MAX_DIGITS} \
             (country code included)",
            digits.len()
        )));
    }
    if digits.starts_with('0') {
        return Err(PhoneError::new(
            "has a country code starting with 0; no country code does \
             (leave out a national trunk prefix 0)",
        ));
    }
    Ok(digits)
}

/// How many numbers each thread remembers the validation of.
const REMEMBERED: usize = 4096;

thread_local! {
    /// Recently validated numbers (as a number: 7 to 15 digits, no leading
    /// zero, so it is unique) and the answer, per thread: a sender writing
    /// to the same contacts skips the metadata's regexes, whose shared cache
    /// is a lock and a SipHash per pattern. Emptied when full.
    static REMEMBERED_ANSWERS: std::cell::RefCell<std::collections::HashMap<u64, Result<String, PhoneError>>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// Stage 2: validation against the numbering-plan metadata. `digits` are
/// 7 to 15 ASCII digits, the first one not `0`. Returns the E.164 form.
/// A pure function of `digits`, so answers are remembered.
fn validate(digits: &str) -> Result<String, PhoneError> {
    let Ok(key) = digits.parse::<u64>() else {
        return validate_uncached(digits);
    };
    if let Some(known) = REMEMBERED_ANSWERS.with(|m| m.borrow().get(&key).cloned()) {
        return known;
    }
    let answer = validate_uncached(digits);
    REMEMBERED_ANSWERS.with(|m| {
        let mut m = m.borrow_mut();
        if m.len() >= REMEMBERED {
            m.clear();
        }
        m.insert(key, answer.clone());
    });
    answer
}

/// [`validate`], without the memory.
fn validate_uncached(digits: &str) -> Result<String, PhoneError> {
    let Some((code, national)) = split_country_code(digits) else {
        return Err(PhoneError::new(
            "does not start with a known country calling code",
        ));
    };
    let candidate = format!("+{digits}");
    // Valid as written: the answer whatever the library would make of it
    // (see the match below), without its parse, the costly part (a
    // normalisation pass and a regex per step; 7% of a send's CPU).
    if valid_as_written(code, national) {
        return Ok(candidate);
    }

    let library = phonenumber::parse(None, &candidate).ok().map(|number| {
        // Built by hand rather than with `number.format()`: the library's
        // formatter matches every format pattern of the region even for
        // E.164 (thrashing its small regex cache, milliseconds per call), and
        // its `Display` returns an error, so `to_string()` would panic, for a
        // number whose country code it does not know.
        let e164 = format!("+{}{}", number.code().value(), number.national());
        (e164, phonenumber::is_valid(&number))
    });

    match library {
        Some((e164, true)) if e164 == candidate => Ok(candidate),
        // Valid as written was taken above: the library also rewrites a
        // few valid numbers (e.g. +7 800…), which are kept as written.
        // It dropped a trunk prefix (or carrier code) written after the
        // country code, as libphonenumber does for international input.
        Some((e164, true)) => Ok(e164),
        _ => Err(PhoneError::new(format!(
            "is not a valid number for its country code (+{code})"
        ))),
    }
}

/// Split `digits` into a known country calling code and the national
/// significant number. Country codes are prefix-free, so the first match is
/// the only one.
fn split_country_code(digits: &str) -> Option<(u16, &str)> {
    (1..=MAX_COUNTRY_CODE_DIGITS).find_map(|len| {
        let (code, national) = (digits.get(..len)?, digits.get(len..)?);
        let code: u16 = code.parse().ok()?;
        (code != 0 && DATABASE.by_code(&code).is_some()).then_some((code, national))
    })
}

/// Whether `national` matches, unchanged, a number type of a region using
/// country code `code` (the library's own validity rule, without its
/// prefix stripping).
fn valid_as_written(code: u16, national: &str) -> bool {
    let Some(regions) = DATABASE.by_code(&code) else {
        return false;
    };
    regions.iter().any(|meta| {
        let descriptors = meta.descriptors();
        descriptors.general().is_match(national)
            && VALID_TYPES.iter().any(|kind| {
                descriptors
                    .get(*kind)
                    .is_some_and(|descriptor| descriptor.is_match(national))
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const IN: &str = "+917999709798";

    /// The remembered answer is the answer: for valid and invalid numbers,
    /// asked once and again.
    #[test]
    fn remembered_validations_answer_as_the_metadata_does() {
        for digits in [
            "917999709798",
            "917999709",
            "14155552671",
            "4915112345678",
            "999123456",
        ] {
            let fresh = validate_uncached(digits);
            assert_eq!(validate(digits), fresh, "{digits}");
            assert_eq!(validate(digits), fresh, "{digits}, remembered");
        }
    }

    /// Expected outcome of one case: `Ok(e164)` or `Err(exact message)`.
    type Expected = Result<String, String>;

    fn ok(e164: &str) -> Expected {
        Ok(e164.to_owned())
    }

    fn err(message: &str) -> Expected {
        Err(message.to_owned())
    }

    fn letter(c: char) -> Expected {
        Err(format!(
            "contains a letter ({c:?}); only digits are accepted \
             (no keypad letters, tel: prefixes or extensions)"
        ))
    }

    fn digit_count(n: usize) -> Expected {
        Err(format!(
            "has {n} digits; international numbers have 7 to 15 (country code included)"
        ))
    }

    fn extension(c: char) -> Expected {
        Err(format!(
            "contains {c:?}; extensions, pauses and service codes are not accepted"
        ))
    }

    fn whitespace(c: char) -> Expected {
        Err(format!(
            "contains {c:?}; only plain spaces may separate digit groups"
        ))
    }

    fn not_allowed(c: char) -> Expected {
        Err(format!(
            "contains {c:?}, which is not allowed; use digits, spaces, \
             '-', '.', '(', ')' and a leading + or 00"
        ))
    }

    fn non_ascii_digit(c: char) -> Expected {
        Err(format!(
            "contains the non-ASCII digit {c:?}; use the digits 0-9"
        ))
    }

    fn invalid_for(code: u16) -> Expected {
        Err(format!(
            "is not a valid number for its country code (+{code})"
        ))
    }

    const E_PLUS: &str =
        "has a + that is not the first character; write one + followed by the country code";
    const E_CC0: &str = "has a country code starting with 0; no country code does \
         (leave out a national trunk prefix 0)";
    const E_LONG: &str = "is too long (more than 64 characters)";
    const E_UNKNOWN_CC: &str = "does not start with a known country calling code";

    #[test]
    fn table() {
        let long = format!("+91{}", "9".repeat(97));
        let spaced = format!("{}+917999709798", " ".repeat(60));
        let cases: Vec<(&str, Expected)> = vec![
            // Accepted forms of the same Indian mobile number.
            ("+917999709798", ok(IN)),
            ("+91 79997 09798", ok(IN)),
            ("+91-7999-709798", ok(IN)),
            ("+91 (799) 970.9798", ok(IN)),
            ("00917999709798", ok(IN)),
            ("00 91 7999 709798", ok(IN)),
            (" +917999709798 ", ok(IN)),
            ("\t+917999709798\r\n", ok(IN)),
            ("+ 91 7999 709798", ok(IN)),
            ("+(91) 7999709798", ok(IN)),
            ("+91.7999.709.798", ok(IN)),
            // Other valid numbers.
            ("+917000000001", ok("+917000000001")),
            ("+14155552671", ok("+14155552671")),
            ("+1 (415) 555-2671", ok("+14155552671")),
            ("001 415 555 2671", ok("+14155552671")),
            ("+442071838750", ok("+442071838750")),
            ("+44 20 7183 8750", ok("+442071838750")),
            ("+4915123456789", ok("+4915123456789")),
            ("+39 06 6982 0000", ok("+390669820000")),
            ("+54 9 11 2345 6789", ok("+5491123456789")),
            ("+55 11 91234 5678", ok("+5511912345678")),
            ("+86 138 0013 8000", ok("+8613800138000")),
            ("+52 55 1234 5678", ok("+525512345678")),
            ("+800 1234 5678", ok("+80012345678")),
            // Valid as written although the library itself would mangle it.
            ("+7 800 123 4567", ok("+78001234567")),
            ("+370 800 12345", ok("+37080012345")),
            ("+7 812 123 45 67", ok("+78121234567")),
            // No international prefix.
            ("917999709798", err(NOT_INTERNATIONAL)),
            ("07999709798", err(NOT_INTERNATIONAL)),
            ("07999 709798", err(NOT_INTERNATIONAL)),
            ("0 0917999709798", err(NOT_INTERNATIONAL)),
            ("(+91) 7999709798", err(E_PLUS)),
            // Misplaced or repeated +.
            ("++917999709798", err(E_PLUS)),
            ("+91-+7999709798", err(E_PLUS)),
            ("00+917999709798", err(E_PLUS)),
            ("+917999709798+", err(E_PLUS)),
            // Letters: URIs, keypad words, look-alikes, extensions.
            ("tel:+917999709798", letter('t')),
            ("+91 7000O 00001", letter('O')),
            ("+91 70000 0000l", letter('l')),
            ("+1-800-FLOWERS", letter('F')),
            ("+917999709798 x123", letter('x')),
            ("+917999709798 ext. 5", letter('e')),
            ("+917999709798;ext=1", extension(';')),
            ("+917999709798#", extension('#')),
            ("+917999709798,1", extension(',')),
            ("+91_7999709798", not_allowed('_')),
            ("+91/7999709798", not_allowed('/')),
            ("+91\u{0}7999709798", not_allowed('\0')),
            // Whitespace other than plain spaces inside.
            ("+91\t7999709798", whitespace('\t')),
            ("+91 7999\n709798", whitespace('\n')),
            ("+91\u{a0}7999709798", whitespace('\u{a0}')),
            // Non-ASCII digits.
            ("＋９１７９９９７０９７９８", not_allowed('＋')),
            ("+９１７９９９７０９７９８", non_ascii_digit('９')),
            ("+٩١٧٩٩٩٧٠٩٧٩٨", non_ascii_digit('٩')),
            // Digit counts.
            ("+12345", digit_count(5)),
            ("+", digit_count(0)),
            ("00", digit_count(0)),
            ("+ - ( ) .", digit_count(0)),
            ("+91799970979812345678", digit_count(20)),
            ("+1234567890123456", digit_count(16)),
            // Country codes.
            ("+0917999709798", err(E_CC0)),
            ("000917999709798", err(E_CC0)),
            ("+999 1234567", err(E_UNKNOWN_CC)),
            ("+80 1234 5678", err(E_UNKNOWN_CC)),
            // Numbering-plan validity.
            ("+1 555 0100", invalid_for(1)),
            ("+1 555 555 0100", invalid_for(1)),
            ("+91 20 1234 5678", invalid_for(91)),
            ("+91 00000 00000", invalid_for(91)),
            ("+9179997097", invalid_for(91)),
            ("+52 1 55 1234 5678", invalid_for(52)),
            // A trunk prefix (or carrier code) after the country code is
            // dropped where libphonenumber drops it.
            ("+44 (0)20 7946 0958", ok("+442079460958")),
            ("+44 (0)20 7183 8750", ok("+442071838750")),
            ("+44 07911 123456", ok("+447911123456")),
            ("+91 0 70000 00001", ok("+917000000001")),
            ("+91 07999 709798", ok(IN)),
            ("0091 0 7999 709798", ok(IN)),
            ("+49 (0) 151 23456789", ok("+4915123456789")),
            ("+54 11 15 2345 6789", ok("+5491123456789")),
            // ...but a national number still needs its country code.
            ("(0)20 7946 0958", err(NOT_INTERNATIONAL)),
            ("+0 20 7946 0958", err(E_CC0)),
            // Empty, blank, too long.
            ("", err("is empty")),
            ("   ", err("is empty")),
            ("\n", err("is empty")),
            (long.as_str(), err(E_LONG)),
            (spaced.as_str(), err(E_LONG)),
        ];

        let mut failures = Vec::new();
        for (raw, expected) in &cases {
            let got = Phone::parse(raw);
            let matches = match (&got, expected) {
                (Ok(phone), Ok(e164)) => phone.e164() == e164,
                (Err(err), Err(message)) => &err.0 == message,
                _ => false,
            };
            if !matches {
                failures.push(format!("{raw:?}: expected {expected:?}, got {got:?}"));
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} cases failed:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
        assert!(cases.len() >= 40);
    }

    #[test]
    fn accessors_and_display() {
        let phone = Phone::parse("+91 79997 09798").expect("valid number");
        assert_eq!(phone.e164(), "+917999709798");
        assert_eq!(phone.digits(), "917999709798");
        assert_eq!(phone.to_string(), "+917999709798");
        assert_eq!(phone, Phone::parse("00917999709798").expect("valid number"));

        let err = Phone::parse("917999709798").expect_err("no prefix");
        assert_eq!(err.to_string(), NOT_INTERNATIONAL);
        let boxed: Box<dyn std::error::Error> = Box::new(err);
        assert_eq!(boxed.to_string(), NOT_INTERNATIONAL);
    }

    #[test]
    fn length_limit_counts_characters() {
        // 64 characters, digits well inside the limit: accepted.
        let at_limit = format!("+91{}7999709798", " ".repeat(51));
        assert_eq!(at_limit.chars().count(), 64);
        assert_eq!(
            Phone::parse(&at_limit).map(|p| p.e164().to_owned()),
            Ok(IN.to_owned())
        );
        // 65: refused, even though trimming would make it short.
        let over = format!("{at_limit} ");
        assert_eq!(
            Phone::parse(&over),
            Err(PhoneError::new("is too long (more than 64 characters)"))
        );
    }

    /// Every example number in the metadata, written in E.164, is accepted
    /// unchanged: guards the "valid as written" fallback for numbers the
    /// library itself mangles.
    #[test]
    fn metadata_examples_are_accepted_as_written() {
        let mut checked = 0;
        let mut failures = Vec::new();
        for meta in DATABASE.iter() {
            for kind in VALID_TYPES {
                let Some(example) = meta.descriptors().get(kind).and_then(|d| d.example()) else {
                    continue;
                };
                let e164 = format!("+{}{example}", meta.country_code());
                let digits = e164.len() - 1;
                if !(MIN_DIGITS..=MAX_DIGITS).contains(&digits) {
                    continue; // outside the contract, e.g. Iran's 6-digit +98 9601
                }
                checked += 1;
                let got = Phone::parse(&e164);
                if got.as_ref().map(Phone::e164) != Ok(e164.as_str()) {
                    failures.push(format!("{} {kind:?} {e164}: {got:?}", meta.id()));
                }
            }
        }
        assert!(checked > 1000, "only {checked} examples checked");
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    /// Tiny deterministic generator (xorshift) so the test needs no crates.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn never_panics_on_weird_input() {
        const PIECES: &[&str] = &[
            "+", "00", "0", "1", "7", "9", "91", "44", "800", " ", "-", ".", "(", ")", "++",
            "tel:", ";ext=", "x", "#", "*", ",", "\t", "\n", "\0", "\u{a0}", "é", "ß", "९", "٣",
            "１", "＋", "😀", "\u{200b}", "\u{202e}", "\u{fffd}", "𝟗", "Ⅸ", "½", "O", "l", "%2B",
            "\\", "\"",
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut inputs: Vec<String> = Vec::new();
        for _ in 0..600 {
            let mut s = String::new();
            for _ in 0..rng.below(24) {
                s.push_str(PIECES[rng.below(PIECES.len())]);
            }
            inputs.push(s);
        }
        // Every length of well-formed `+digits`, so the library itself sees
        // many inputs (including 7..=15 digit strings with every leading digit).
        for len in 0..=20 {
            for _ in 0..40 {
                let mut s = String::from("+");
                for _ in 0..len {
                    s.push(char::from(b'0' + rng.below(10) as u8));
                }
                inputs.push(s);
            }
        }
        inputs.push("9".repeat(100_000));
        inputs.push("é".repeat(10_000));

        let mut accepted = 0;
        for input in &inputs {
            if let Ok(phone) = Phone::parse(input) {
                accepted += 1;
                // Whatever is accepted is canonical and re-parses to itself.
                assert_eq!(Phone::parse(phone.e164()).as_ref(), Ok(&phone));
                assert_eq!(phone.digits().len() + 1, phone.e164().len());
            }
        }
        assert!(
            accepted > 0,
            "the generator should produce some valid numbers"
        );
    }
}
