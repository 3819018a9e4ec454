//! `POST /v1/completions`.

use super::*;

pub(crate) async fn completions(
    State(s): State<Shared>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let CompletionRequest { params: p, prompt } = CompletionRequest::parse(&body_bytes(body)?)?;
    let p = params(&s, p);
    let output = OutputSpec {
        content: p.structured.as_ref().map(|s| s.grammar.clone()),
        ..Default::default()
    };
    let (prompt_tokens, _, mut rxs) = submit_choices(&s, Prompt::Raw(prompt), output, &p).await?;
    let id = format!("cmpl-{}", random_hex(24));
    let created = now();
    let model = s.model.clone();
    let response = move |choice: wire::CompletionChoice,
                         usage: Option<wire::Usage>,
                         timings: Option<wire::Timings>| wire::Completion {
        id: id.clone(),
        object: "text_completion",
        created,
        model: model.clone(),
        choices: vec![choice],
        usage,
        timings,
    };
    let choice = |index: usize,
                  text: &str,
                  finish: Option<&'static str>,
                  lp: Option<wire::LegacyLogprobs>| {
        wire::CompletionChoice {
            index: index as _,
            text: text.to_string(),
            finish_reason: finish,
            logprobs: lp,
        }
    };
    if !p.stream {
        let (collected, stats) = collect_choices(&mut rxs).await?;
        let mut choices: Vec<_> = collected
            .iter()
            .enumerate()
            .map(|(index, c)| {
                let lp = p
                    .logprobs
                    .map(|_| wire::LegacyLogprobs::from_entries(&c.logprobs, 0));
                choice(index, &c.text, Some(finish_name(c.finish)), lp)
            })
            .collect();
        let mut r = response(
            choices.remove(0),
            Some(usage(prompt_tokens, &stats)),
            Some(timings(&stats)),
        );
        r.choices.extend(choices);
        return Ok(Json(r).into_response());
    }
    // streaming: every choice's chunks as they come, told apart by `index`; the last chunk
    // (the end of the last choice to finish) carries the request's usage
    let stops = p.stops.clone();
    let include_usage = p.include_usage;
    let state = StreamState::new(rxs, VecDeque::new());
    // log-probabilities ride on the next chunk of their choice that goes out
    let pending = |c: &mut ChoiceStream| {
        (!c.logprobs.is_empty()).then(|| {
            wire::LegacyLogprobs::from_entries(&std::mem::take(&mut c.logprobs), c.sent.len())
        })
    };
    Ok(sse_stream(state, move |st, i, event| match event {
        Event::Logprob(v) => st.choices[i].logprobs.push(v),
        Event::Piece(piece) => {
            let c = &mut st.choices[i];
            c.text.push_str(&piece);
            let end = safe_len(&c.text, &stops);
            if end > c.sent.len() {
                let lp = pending(c);
                let delta = &c.text[c.sent.len()..end];
                let line = to_json(&response(choice(i, delta, None, lp), None, None));
                c.sent = c.text[..end].to_string();
                st.out.push_back(line);
            }
        }
        Event::Done {
            text,
            stats,
            finish,
        } => {
            let c = &mut st.choices[i];
            let lp = pending(c);
            let delta = text.strip_prefix(c.sent.as_str()).unwrap_or("").to_string();
            let total = st.end_choice(i, stats);
            let (u, t) = match &total {
                Some(total) if include_usage => {
                    (Some(usage(prompt_tokens, total)), Some(timings(total)))
                }
                _ => (None, None),
            };
            let last = response(choice(i, &delta, Some(finish_name(finish)), lp), u, t);
            st.out.push_back(to_json(&last));
            if total.is_some() {
                st.out.push_back("[DONE]".into());
                st.done = true;
            }
        }
        _ => {}
    }))
}
