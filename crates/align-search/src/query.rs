//! Query arithmetic as rclip has it: `"beach" + "sunset" - "people"`, with weights
//! `2:"cat"`. A query without double quotes is one text.

use crate::error::{Error, Result};

/// One weighted text of a query.
#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    pub weight: f32,
    pub text: String,
}

/// Splits a query into weighted texts.
pub fn parse(query: &str) -> Result<Vec<Term>> {
    let bad = |why: &str| Error::Query(format!("query {query:?}: {why}"));
    if !query.contains('"') {
        if query.trim().is_empty() {
            return Err(bad("empty"));
        }
        return Ok(vec![Term {
            weight: 1.0,
            text: query.to_string(),
        }]);
    }
    let mut terms = Vec::new();
    let mut rest = query.trim_start();
    let mut first = true;
    while !rest.is_empty() {
        let mut sign = 1.0;
        if let Some(r) = rest.strip_prefix('+') {
            rest = r.trim_start();
        } else if let Some(r) = rest.strip_prefix('-') {
            sign = -1.0;
            rest = r.trim_start();
        } else if !first {
            return Err(bad("expected + or - between quoted texts"));
        }
        let mut weight = 1.0f32;
        if let Some(colon) = rest.find(':')
            && !rest[..colon].contains('"')
        {
            weight = rest[..colon]
                .trim()
                .parse()
                .ok()
                .filter(|w: &f32| w.is_finite())
                .ok_or_else(|| {
                    bad(&format!(
                        "weight {:?} is not a number",
                        rest[..colon].trim()
                    ))
                })?;
            rest = rest[colon + 1..].trim_start();
        }
        let Some(r) = rest.strip_prefix('"') else {
            return Err(bad("expected a text in double quotes"));
        };
        let end = r.find('"').ok_or_else(|| bad("unclosed double quote"))?;
        let text = &r[..end];
        if text.trim().is_empty() {
            return Err(bad("an empty quoted text"));
        }
        terms.push(Term {
            weight: sign * weight,
            text: text.to_string(),
        });
        rest = r[end + 1..].trim_start();
        first = false;
    }
    if terms.is_empty() {
        return Err(bad("empty"));
    }
    Ok(terms)
}

/// `sum(weight * embedding)`, L2-normalised.
pub fn combine(terms: &[Term], embeddings: &[Vec<f32>]) -> Result<Vec<f32>> {
    let dim = embeddings.first().map_or(0, Vec::len);
    let mut sum = vec![0.0f32; dim];
    for (t, e) in terms.iter().zip(embeddings) {
        for (s, x) in sum.iter_mut().zip(e) {
            *s += t.weight * x;
        }
    }
    normalize(sum)
}

/// `v / |v|`; an error for a zero vector.
pub fn normalize(mut v: Vec<f32>) -> Result<Vec<f32>> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if !(norm > 0.0 && norm.is_finite()) {
        return Err(Error::Query(
            "the query's embedding is zero (its terms cancel out)".into(),
        ));
    }
    v.iter_mut().for_each(|x| *x /= norm);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(weight: f32, text: &str) -> Term {
        Term {
            weight,
            text: text.into(),
        }
    }

    #[test]
    fn parses_rclip_arithmetic() {
        assert_eq!(parse("a red car").unwrap(), [t(1.0, "a red car")]);
        assert_eq!(
            parse(r#""beach" + "sunset" - "people""#).unwrap(),
            [t(1.0, "beach"), t(1.0, "sunset"), t(-1.0, "people")]
        );
        assert_eq!(
            parse(r#"2:"cat" - 0.5:"dog""#).unwrap(),
            [t(2.0, "cat"), t(-0.5, "dog")]
        );
    }

    #[test]
    fn rejects_malformed_queries() {
        for q in [
            "",
            "  ",
            r#""cat" "dog""#,
            r#""cat"#,
            r#"x:"cat""#,
            r#""""#,
            r#""cat" +"#,
        ] {
            assert!(parse(q).is_err(), "{q:?}");
        }
    }

    #[test]
    fn combines_and_normalises() {
        let v = combine(
            &[t(2.0, "a"), t(-1.0, "b")],
            &[vec![1.0, 0.0], vec![0.0, 1.0]],
        )
        .unwrap();
        let n = 5f32.sqrt();
        assert_eq!(v, [2.0 / n, -1.0 / n]);
        assert!(combine(&[t(1.0, "a"), t(-1.0, "a")], &[vec![1.0], vec![1.0]]).is_err());
    }
}
