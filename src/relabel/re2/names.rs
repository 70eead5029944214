//! The names Go 1.19's `regexp/syntax` knows: Unicode 13.0's general
//! categories and scripts (`unicode.Categories`, `unicode.Scripts`, plus
//! `Any`), and the ASCII classes of `perl_groups.go`.
//!
//! Rust's regex crate knows more names (`\p{Letter}`, `\p{greek}`,
//! `\p{sc=Greek}`, scripts of later Unicode versions); Go refuses those,
//! so the parser checks names against these lists.

use super::ast::Group;

/// `unicode.Categories` (Go 1.19, Unicode 13.0.0).
const CATEGORIES: &[&str] = &[
    "C", "Cc", "Cf", "Co", "Cs", "L", "Ll", "Lm", "Lo", "Lt", "Lu", "M", "Mc", "Me", "Mn", "N",
    "Nd", "Nl", "No", "P", "Pc", "Pd", "Pe", "Pf", "Pi", "Po", "Ps", "S", "Sc", "Sk", "Sm", "So",
    "Z", "Zl", "Zp", "Zs",
];

/// `unicode.Scripts` (Go 1.19, Unicode 13.0.0).
const SCRIPTS: &[&str] = &[
    "Adlam",
    "Ahom",
    "Anatolian_Hieroglyphs",
    "Arabic",
    "Armenian",
    "Avestan",
    "Balinese",
    "Bamum",
    "Bassa_Vah",
    "Batak",
    "Bengali",
    "Bhaiksuki",
    "Bopomofo",
    "Brahmi",
    "Braille",
    "Buginese",
    "Buhid",
    "Canadian_Aboriginal",
    "Carian",
    "Caucasian_Albanian",
    "Chakma",
    "Cham",
    "Cherokee",
    "Chorasmian",
    "Common",
    "Coptic",
    "Cuneiform",
    "Cypriot",
    "Cyrillic",
    "Deseret",
    "Devanagari",
    "Dives_Akuru",
    "Dogra",
    "Duployan",
    "Egyptian_Hieroglyphs",
    "Elbasan",
    "Elymaic",
    "Ethiopic",
    "Georgian",
    "Glagolitic",
    "Gothic",
    "Grantha",
    "Greek",
    "Gujarati",
    "Gunjala_Gondi",
    "Gurmukhi",
    "Han",
    "Hangul",
    "Hanifi_Rohingya",
    "Hanunoo",
    "Hatran",
    "Hebrew",
    "Hiragana",
    "Imperial_Aramaic",
    "Inherited",
    "Inscriptional_Pahlavi",
    "Inscriptional_Parthian",
    "Javanese",
    "Kaithi",
    "Kannada",
    "Katakana",
    "Kayah_Li",
    "Kharoshthi",
    "Khitan_Small_Script",
    "Khmer",
    "Khojki",
    "Khudawadi",
    "Lao",
    "Latin",
    "Lepcha",
    "Limbu",
    "Linear_A",
    "Linear_B",
    "Lisu",
    "Lycian",
    "Lydian",
    "Mahajani",
    "Makasar",
    "Malayalam",
    "Mandaic",
    "Manichaean",
    "Marchen",
    "Masaram_Gondi",
    "Medefaidrin",
    "Meetei_Mayek",
    "Mende_Kikakui",
    "Meroitic_Cursive",
    "Meroitic_Hieroglyphs",
    "Miao",
    "Modi",
    "Mongolian",
    "Mro",
    "Multani",
    "Myanmar",
    "Nabataean",
    "Nandinagari",
    "New_Tai_Lue",
    "Newa",
    "Nko",
    "Nushu",
    "Nyiakeng_Puachue_Hmong",
    "Ogham",
    "Ol_Chiki",
    "Old_Hungarian",
    "Old_Italic",
    "Old_North_Arabian",
    "Old_Permic",
    "Old_Persian",
    "Old_Sogdian",
    "Old_South_Arabian",
    "Old_Turkic",
    "Oriya",
    "Osage",
    "Osmanya",
    "Pahawh_Hmong",
    "Palmyrene",
    "Pau_Cin_Hau",
    "Phags_Pa",
    "Phoenician",
    "Psalter_Pahlavi",
    "Rejang",
    "Runic",
    "Samaritan",
    "Saurashtra",
    "Sharada",
    "Shavian",
    "Siddham",
    "SignWriting",
    "Sinhala",
    "Sogdian",
    "Sora_Sompeng",
    "Soyombo",
    "Sundanese",
    "Syloti_Nagri",
    "Syriac",
    "Tagalog",
    "Tagbanwa",
    "Tai_Le",
    "Tai_Tham",
    "Tai_Viet",
    "Takri",
    "Tamil",
    "Tangut",
    "Telugu",
    "Thaana",
    "Thai",
    "Tibetan",
    "Tifinagh",
    "Tirhuta",
    "Ugaritic",
    "Vai",
    "Wancho",
    "Warang_Citi",
    "Yezidi",
    "Yi",
    "Zanabazar_Square",
];

/// The name as a `'static` str if Go 1.19 knows it (case-sensitive,
/// exact: Go does no loose matching).
pub(super) fn unicode_name(name: &str) -> Option<&'static str> {
    if name == "Any" {
        return Some("Any");
    }
    CATEGORIES
        .binary_search(&name)
        .map(|i| CATEGORIES[i])
        .or_else(|_| SCRIPTS.binary_search(&name).map(|i| SCRIPTS[i]))
        .ok()
}

const DIGIT: Group = &[(0x30, 0x39)];
/// Go's `\s` is `[\t\n\f\r ]`: no `\v`, unlike Rust's ASCII `\s`.
const SPACE: Group = &[(0x9, 0xa), (0xc, 0xd), (0x20, 0x20)];
const WORD: Group = &[(0x30, 0x39), (0x41, 0x5a), (0x5f, 0x5f), (0x61, 0x7a)];

/// `perlGroup`: `\d \D \s \S \w \W` (ASCII only, as in Go).
pub(super) fn perl_group(letter: u8) -> Option<(Group, bool)> {
    Some(match letter {
        b'd' => (DIGIT, false),
        b'D' => (DIGIT, true),
        b's' => (SPACE, false),
        b'S' => (SPACE, true),
        b'w' => (WORD, false),
        b'W' => (WORD, true),
        _ => return None,
    })
}

/// `posixGroup`: `[:alnum:]`, `[:^alnum:]` and the rest.
pub(super) fn posix_group(name: &str) -> Option<(Group, bool)> {
    let (negated, base) = match name.strip_prefix("[:^") {
        Some(rest) => (true, rest),
        None => (false, name.strip_prefix("[:")?),
    };
    let ranges: Group = match base.strip_suffix(":]")? {
        "alnum" => &[(0x30, 0x39), (0x41, 0x5a), (0x61, 0x7a)],
        "alpha" => &[(0x41, 0x5a), (0x61, 0x7a)],
        "ascii" => &[(0x0, 0x7f)],
        "blank" => &[(0x9, 0x9), (0x20, 0x20)],
        "cntrl" => &[(0x0, 0x1f), (0x7f, 0x7f)],
        "digit" => DIGIT,
        "graph" => &[(0x21, 0x7e)],
        "lower" => &[(0x61, 0x7a)],
        "print" => &[(0x20, 0x7e)],
        "punct" => &[(0x21, 0x2f), (0x3a, 0x40), (0x5b, 0x60), (0x7b, 0x7e)],
        "space" => &[(0x9, 0xd), (0x20, 0x20)],
        "upper" => &[(0x41, 0x5a)],
        "word" => WORD,
        "xdigit" => &[(0x30, 0x39), (0x41, 0x46), (0x61, 0x66)],
        _ => return None,
    };
    Some((ranges, negated))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_sorted_for_binary_search() {
        assert!(CATEGORIES.windows(2).all(|w| w[0] < w[1]));
        assert!(SCRIPTS.windows(2).all(|w| w[0] < w[1]));
        assert_eq!((CATEGORIES.len(), SCRIPTS.len()), (36, 156));
    }

    /// Every name Go knows compiles in the regex crate (as emitted).
    #[test]
    fn every_go_name_is_known_to_the_regex_crate() {
        for name in CATEGORIES
            .iter()
            .chain(SCRIPTS)
            .filter(|n| !["C", "Cs"].contains(n))
        {
            let re = format!("\\p{{{name}}}");
            assert!(regex::Regex::new(&re).is_ok(), "{re}");
        }
        assert_eq!(unicode_name("Greek"), Some("Greek"));
        assert_eq!(unicode_name("greek"), None);
        assert_eq!(unicode_name("Letter"), None);
        assert_eq!(unicode_name("Vithkuqi"), None);
    }
}
