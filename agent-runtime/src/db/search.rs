//! Ranked full-text search over the titles and messages of a user's sessions
//! (tsvector + GIN on Postgres, FTS5 on SQLite).

use sqlx::AssertSqlSafe;

use super::messages::{prefixed, truncate_chars};
use super::sessions::SESSION_COLUMNS;
use super::{Backend, Session, Store, StoreError};

/// One search result.
#[derive(Clone, Debug)]
pub struct SearchHit {
    /// The matching session.
    pub session: Session,
    /// Relevance; higher is better.
    pub score: f64,
    /// The best-matching text (a message or the title).
    pub snippet: String,
}

#[derive(sqlx::FromRow)]
struct SearchRow {
    #[sqlx(flatten)]
    session: Session,
    score: f64,
    snippet: Option<String>,
    total: i64,
}

impl Store {
    /// Ranked full-text search over titles and message text of the user's
    /// sessions that are not deleted. A title hit weighs double; a session's
    /// score adds up its hits. Returns a page and the total.
    pub async fn search(
        &self,
        user_id: &str,
        query: &str,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<SearchHit>, i64), StoreError> {
        let cols = prefixed(SESSION_COLUMNS, "s");
        let terms = Terms::of(query);
        if terms.words.is_empty() && terms.unspaced.is_empty() {
            return Ok((Vec::new(), 0));
        }
        let rows: Vec<SearchRow> = match &self.backend {
            Backend::Postgres(pool) => {
                // Words through the full-text index; a word of a script written
                // without spaces as a substring ($5, every one required).
                let contains = |column: &str| {
                    format!(
                        "NOT EXISTS (SELECT 1 FROM unnest($5::text[]) t \
                         WHERE strpos(lower(coalesce({column}, '')), lower(t)) = 0)"
                    )
                };
                // Every word must match and nothing is query syntax, as with SQLite
                // (`fts5_query`): not websearch_to_tsquery, which would read `-word`
                // and `or`. Without words, no text-search query at all (an empty one
                // matches nothing, with a notice).
                let (query_sql, with_query, message_rank, message_match, title_rank, title_match) =
                    if terms.words.is_empty() {
                        (
                            "SELECT CAST($2 AS TEXT) AS words",
                            "",
                            "1",
                            contains("m.content"),
                            "1",
                            contains("s.title"),
                        )
                    } else {
                        (
                            "SELECT plainto_tsquery('simple', $2) AS query",
                            ", q",
                            "ts_rank(m.content_tsv, q.query)",
                            format!("m.content_tsv @@ q.query AND {}", contains("m.content")),
                            "ts_rank(s.title_tsv, q.query)",
                            format!("s.title_tsv @@ q.query AND {}", contains("s.title")),
                        )
                    };
                let sql = format!(
                    "WITH q AS ({query_sql}), \
                     hits AS ( \
                       SELECT m.session_id, {message_rank} AS rank, m.content AS text \
                       FROM messages m JOIN sessions s ON s.id = m.session_id{with_query} \
                       WHERE s.user_id = $1 AND s.status <> 'deleted' AND {message_match} \
                       UNION ALL \
                       SELECT s.id, 2 * {title_rank}, s.title \
                       FROM sessions s{with_query} \
                       WHERE s.user_id = $1 AND s.status <> 'deleted' AND {title_match}), \
                     ranked AS ( \
                       SELECT session_id, SUM(rank) AS score, \
                              (array_agg(text ORDER BY rank DESC))[1] AS snippet \
                       FROM hits GROUP BY session_id) \
                     SELECT {cols}, CAST(r.score AS DOUBLE PRECISION) AS score, r.snippet, \
                            COUNT(*) OVER () AS total \
                     FROM ranked r JOIN sessions s ON s.id = r.session_id \
                     ORDER BY r.score DESC, s.updated_at DESC, s.id LIMIT $3 OFFSET $4"
                );
                sqlx::query_as(AssertSqlSafe(sql.as_str()))
                    .bind(user_id)
                    // The query as it came when words go through the index: Postgres's
                    // parser keeps hosts, paths and versions (`example.com`, `1.30`)
                    // as the single words it indexed them as.
                    .bind(if terms.words.is_empty() { "" } else { query })
                    .bind(limit)
                    .bind(offset)
                    .bind(&terms.unspaced)
                    .fetch_all(pool)
                    .await?
            }
            Backend::Sqlite(pool) => {
                // Every stored message is found: those not indexed yet are
                // indexed first (see `fts_batch`).
                self.index_pending().await?;
                // As with Postgres; $5 is a JSON array of the substrings.
                let contains = |column: &str| {
                    format!(
                        "NOT EXISTS (SELECT 1 FROM json_each($5) t \
                         WHERE instr(lower(coalesce({column}, '')), lower(t.value)) = 0)"
                    )
                };
                let hits = match fts5_query(&terms.words) {
                    Some(_) => format!(
                        "SELECT m.session_id AS session_id, -bm25(messages_fts) AS hit, m.content AS text \
                         FROM messages_fts JOIN messages m ON m.seq = messages_fts.rowid \
                         JOIN sessions s ON s.id = m.session_id \
                         WHERE messages_fts MATCH $2 AND s.user_id = $1 AND s.status <> 'deleted' \
                           AND {} \
                         UNION ALL \
                         SELECT s.id, -2 * bm25(sessions_fts), s.title \
                         FROM sessions_fts JOIN sessions s ON s.rid = sessions_fts.rowid \
                         WHERE sessions_fts MATCH $2 AND s.user_id = $1 AND s.status <> 'deleted' \
                           AND {}",
                        contains("m.content"),
                        contains("s.title"),
                    ),
                    None => format!(
                        "SELECT m.session_id AS session_id, 1.0 AS hit, m.content AS text \
                         FROM messages m JOIN sessions s ON s.id = m.session_id \
                         WHERE s.user_id = $1 AND s.status <> 'deleted' AND $2 = '' AND {} \
                         UNION ALL \
                         SELECT s.id, 2.0, s.title \
                         FROM sessions s \
                         WHERE s.user_id = $1 AND s.status <> 'deleted' AND {}",
                        contains("m.content"),
                        contains("s.title"),
                    ),
                };
                let sql = format!(
                    "WITH hits AS ({hits}), \
                     ranked AS ( \
                       SELECT session_id, SUM(hit) AS score, MAX(hit) AS best, text AS snippet \
                       FROM hits GROUP BY session_id) \
                     SELECT {cols}, CAST(r.score AS REAL) AS score, r.snippet, \
                            COUNT(*) OVER () AS total \
                     FROM ranked r JOIN sessions s ON s.id = r.session_id \
                     ORDER BY r.score DESC, s.updated_at DESC, s.id LIMIT $3 OFFSET $4"
                );
                let unspaced = serde_json::Value::from(terms.unspaced.clone()).to_string();
                sqlx::query_as(AssertSqlSafe(sql.as_str()))
                    .bind(user_id)
                    .bind(fts5_query(&terms.words).unwrap_or_default())
                    .bind(limit)
                    .bind(offset)
                    .bind(unspaced)
                    .fetch_all(pool)
                    .await?
            }
        };
        let total = rows.first().map(|r| r.total).unwrap_or(0);
        let hits = rows
            .into_iter()
            .map(|r| SearchHit {
                session: r.session,
                score: r.score,
                snippet: truncate_chars(r.snippet.as_deref().unwrap_or(""), 200),
            })
            .collect();
        Ok((hits, total))
    }
}

/// The words of a query: those the full-text indexes hold as words, and those of
/// scripts written without spaces between words (Chinese, Japanese, Thai...), which
/// the indexes hold as whole runs of text, so that a word inside one is found only as
/// a substring (as a search box is expected to find it).
#[derive(Debug, PartialEq)]
struct Terms {
    words: Vec<String>,
    unspaced: Vec<String>,
}

impl Terms {
    fn of(input: &str) -> Self {
        let (mut unspaced, words): (Vec<String>, Vec<String>) = input
            .split(|c: char| !c.is_alphanumeric() && !unspaced_script(c))
            .filter(|w| !w.is_empty())
            .map(str::to_owned)
            .partition(|w| w.chars().any(unspaced_script));
        if unspaced.is_empty() {
            return Self { words, unspaced };
        }
        // Such text holds other words without spaces too ("Kubernetes集群"), where
        // the index sees one run: every word of the query is then a substring.
        unspaced.extend(words);
        Self {
            words: Vec::new(),
            unspaced,
        }
    }
}

/// Whether `c` is of a script written without spaces between words: Han, kana,
/// Hangul syllables and jamo (Korean words carry their particles), Thai, Lao, Khmer,
/// Myanmar. Every character of those blocks belongs to a word (Thai tone marks are
/// not alphanumeric, and would split one).
fn unspaced_script(c: char) -> bool {
    // Their punctuation and signs still part words: the katakana middle dot and
    // double hyphen, Thai's baht sign and marks, Myanmar's and Khmer's full stops.
    if matches!(
        c as u32,
        0x30A0 | 0x30FB | 0x0E3F | 0x0E4F | 0x0E5A | 0x0E5B | 0x104A | 0x104B | 0x17D4..=0x17DB
    ) {
        return false;
    }
    matches!(c as u32,
        0x0E00..=0x0EFF // Thai, Lao
        | 0x1000..=0x109F // Myanmar
        | 0x1100..=0x11FF // Hangul jamo
        | 0x1780..=0x17FF // Khmer
        | 0x3040..=0x30FF // Hiragana, Katakana
        | 0x3130..=0x318F // Hangul compatibility jamo
        | 0x31F0..=0x31FF // Katakana phonetic extensions
        | 0x3400..=0x4DBF // CJK extension A
        | 0x4E00..=0x9FFF // CJK unified ideographs
        | 0xAC00..=0xD7AF // Hangul syllables
        | 0xF900..=0xFAFF // CJK compatibility ideographs
        | 0xFF66..=0xFF9F // half-width Katakana
        | 0x20000..=0x3134F // CJK extensions B to G
    )
}

/// The words as an FTS5 query: each quoted (so no input is FTS5 syntax), all
/// required. `None` when there is no word.
fn fts5_query(words: &[String]) -> Option<String> {
    let terms: Vec<String> = words.iter().map(|w| format!("\"{w}\"")).collect();
    (!terms.is_empty()).then(|| terms.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fts5_queries_never_carry_syntax() {
        let words = |q: &str| Terms::of(q).words;
        assert_eq!(
            fts5_query(&words("kube* \"OR\" -x")).as_deref(),
            Some("\"kube\" \"OR\" \"x\"")
        );
        assert_eq!(fts5_query(&words("  ** ")), None);
    }

    #[test]
    fn words_of_unspaced_scripts_are_found_as_substrings() {
        assert_eq!(
            Terms::of("kubernetes café").words,
            ["kubernetes".to_owned(), "café".to_owned()]
        );
        // With any word of such a script, every word is a substring: such text holds
        // other words without spaces too.
        assert_eq!(
            Terms::of("kubernetes 集群, 東京。서울에서 café ภาษาไทย"),
            Terms {
                words: vec![],
                unspaced: ["集群", "東京", "서울에서", "ภาษาไทย", "kubernetes", "café"]
                    .map(str::to_owned)
                    .to_vec(),
            }
        );
        // A word with any such character is one substring, mixed scripts and all.
        assert_eq!(Terms::of("k8s集群").unspaced, ["k8s集群"]);
        // Their punctuation parts words.
        assert_eq!(Terms::of("東京・大阪").unspaced, ["東京", "大阪"]);
        assert_eq!(Terms::of("ภาษาไทย๚ ครับ").unspaced, ["ภาษาไทย", "ครับ"]);
        assert_eq!(
            Terms::of("— "),
            Terms {
                words: vec![],
                unspaced: vec![]
            }
        );
    }
}
