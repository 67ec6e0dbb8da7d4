use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::config::BertConfig;
use crate::error::{Error, Result};

/// A validated batch for [`BertModel::forward`](crate::BertModel::forward): `[batch, seq_len]`
/// tensors of token ids, attention mask and token type ids.
#[derive(Debug, Clone)]
pub struct BertInput {
    pub input_ids: Tensor<2, Int>,
    pub attention_mask: Tensor<2, Int>,
    pub token_type_ids: Tensor<2, Int>,
}

impl BertInput {
    /// Builds tensors from host rows (one per text, all of the same length, already padded).
    /// `token_type_ids` defaults to zeros. Ids are checked against the vocabulary, lengths
    /// against `max_position_embeddings`, so a bad input is an error instead of a panic.
    pub fn new(
        config: &BertConfig,
        input_ids: &[Vec<u32>],
        attention_mask: &[Vec<u32>],
        token_type_ids: Option<&[Vec<u32>]>,
        device: &Device,
    ) -> Result<Self> {
        let batch = input_ids.len();
        if batch == 0 {
            return Err(Error::Input("empty batch".into()));
        }
        let seq_len = input_ids[0].len();
        if seq_len == 0 || seq_len > config.max_position_embeddings {
            return Err(Error::Input(format!(
                "sequence length {seq_len} is outside 1..={}",
                config.max_position_embeddings
            )));
        }
        let zeros;
        let token_type_ids = match token_type_ids {
            Some(t) => t,
            None => {
                zeros = vec![vec![0u32; seq_len]; batch];
                &zeros
            }
        };
        let flatten = |name: &str, rows: &[Vec<u32>], limit: usize| -> Result<Vec<i64>> {
            if rows.len() != batch {
                return Err(Error::Input(format!(
                    "{name} has {} rows, input_ids has {batch}",
                    rows.len()
                )));
            }
            let mut flat = Vec::with_capacity(batch * seq_len);
            for (i, row) in rows.iter().enumerate() {
                if row.len() != seq_len {
                    return Err(Error::Input(format!(
                        "{name} row {i} has length {}, expected {seq_len} (pad the batch)",
                        row.len()
                    )));
                }
                if let Some(bad) = row.iter().find(|&&v| v as usize >= limit) {
                    return Err(Error::Input(format!(
                        "{name} row {i} holds {bad}, which is not below {limit}"
                    )));
                }
                flat.extend(row.iter().map(|&v| v as i64));
            }
            Ok(flat)
        };
        let tensor = |flat: Vec<i64>| {
            Tensor::<2, Int>::from_data(TensorData::new(flat, [batch, seq_len]), device)
        };
        Ok(Self {
            input_ids: tensor(flatten("input_ids", input_ids, config.vocab_size)?),
            attention_mask: tensor(flatten("attention_mask", attention_mask, 2)?),
            token_type_ids: tensor(flatten(
                "token_type_ids",
                token_type_ids,
                config.type_vocab_size,
            )?),
        })
    }
}
