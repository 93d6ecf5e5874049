//! Text as chat apps take it: an answer split into the pieces a platform
//! accepts in one message (Discord 2,000 characters, Slack 4,000).

/// Splits `text` into pieces of at most `max` characters, preferring to break
/// after a blank line, then a line, then a space.
pub fn split(text: &str, max: usize) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut rest = text.trim();
    while rest.chars().count() > max {
        let cut = rest
            .char_indices()
            .nth(max)
            .map(|(i, _)| i)
            .unwrap_or(rest.len());
        let window = &rest[..cut];
        let at = ["\n\n", "\n", " "]
            .iter()
            .find_map(|sep| window.rfind(sep).filter(|i| *i > 0).map(|i| i + sep.len()))
            .unwrap_or(cut);
        pieces.push(rest[..at].trim_end().to_owned());
        rest = rest[at..].trim_start();
    }
    if !rest.is_empty() || pieces.is_empty() {
        pieces.push(rest.to_owned());
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_answers_are_one_piece() {
        assert_eq!(split("hello", 2000), ["hello"]);
    }

    #[test]
    fn long_answers_split_on_paragraphs_lines_then_words() {
        let para = "a".repeat(15);
        let text = format!("{para}\n\n{para}\n\n{para}");
        assert_eq!(
            split(&text, 40),
            [format!("{para}\n\n{para}"), para.clone()]
        );
        let lines = format!("{para}\n{para}\n{para}");
        assert_eq!(split(&lines, 35), [format!("{para}\n{para}"), para.clone()]);
        assert_eq!(split("one two three four", 9), ["one two", "three", "four"]);
        let word = "x".repeat(25);
        assert_eq!(
            split(&word, 10),
            ["x".repeat(10), "x".repeat(10), "x".repeat(5)]
        );
        let long: String = "word ".repeat(1000);
        let pieces = split(&long, 2000);
        assert!(pieces.iter().all(|p| p.chars().count() <= 2000));
        assert_eq!(pieces.concat().replace(' ', ""), long.replace(' ', ""));
    }

    #[test]
    fn multibyte_text_is_cut_on_characters() {
        let text = "é".repeat(25);
        let pieces = split(&text, 10);
        assert_eq!(pieces.len(), 3);
        assert!(pieces.iter().all(|p| p.chars().count() <= 10));
    }
}
