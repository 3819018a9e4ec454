//! `POST /v1/chat/completions`.

use super::*;

pub(crate) async fn chat_completions(
    State(s): State<Shared>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let ChatRequest {
        params: p,
        messages,
        tools,
        output,
        parallel_tool_calls,
    } = ChatRequest::parse_as(&body_bytes(body)?, s.format)?;
    let format = s.format;
    if format == ChatFormat::Completion {
        return Err(bad(
            "this is a base or code model without a chat format: use /v1/completions",
        ));
    }
    if tools && !matches!(format, ChatFormat::Chatglm3 | ChatFormat::Glm4) {
        return Err(bad(format!(
            "tools: the model's prompt format ({}) has no tool protocol",
            format.as_str()
        )));
    }
    let p = params(&s, p);
    let (prompt_tokens, dropped, mut rxs) =
        submit_choices(&s, Prompt::Chat(messages), output, &p).await?;
    // parallel_tool_calls false: the first call of a reply only
    let final_reply = move |text: &str, tools: bool, format: ChatFormat| {
        let (content, mut calls) = final_reply(text, tools, format);
        if !parallel_tool_calls {
            calls.truncate(1);
        }
        (content, calls)
    };
    let id = format!("chatcmpl-{}", random_hex(24));
    let created = now();
    if !p.stream {
        // every choice (`n`); usage counts the prompt once and every choice's tokens
        let (collected, stats) = collect_choices(&mut rxs).await?;
        let mut choices = Vec::with_capacity(collected.len());
        for (index, c) in collected.into_iter().enumerate() {
            let Collected {
                text,
                finish,
                logprobs,
                ..
            } = c;
            let (content, calls) = final_reply(&text, tools, format);
            let reason = if calls.is_empty() {
                finish_name(finish)
            } else {
                "tool_calls"
            };
            let message = wire::ResponseMessage {
                role: "assistant",
                content: (calls.is_empty() || !content.is_empty()).then_some(content),
                tool_calls: tool_calls_out(&calls, false),
            };
            choices.push(wire::ChatChoice {
                index: index as _,
                message,
                finish_reason: reason,
                logprobs: p
                    .logprobs
                    .map(|_| wire::ChoiceLogprobs { content: logprobs }),
            });
        }
        let r = Json(wire::ChatCompletion {
            id,
            object: "chat.completion",
            created,
            model: s.model.clone(),
            choices,
            usage: usage(prompt_tokens, &stats),
            timings: timings(&stats),
            truncated: dropped > 0,
        })
        .into_response();
        return Ok(report_dropped(r, dropped));
    }
    // streaming: every choice's chunks as they come, told apart by `index`
    let chunk = {
        let id = id.clone();
        let model = s.model.clone();
        move |index: usize,
              delta: wire::Delta,
              finish: Option<&'static str>,
              logprobs: Option<wire::ChoiceLogprobs>| {
            to_json(&wire::ChatCompletionChunk {
                id: id.clone(),
                object: "chat.completion.chunk",
                created,
                model: model.clone(),
                choices: vec![wire::ChunkChoice {
                    index: index as _,
                    delta,
                    finish_reason: finish,
                    logprobs,
                }],
                usage: None,
                timings: None,
            })
        }
    };
    let content = |text: &str| wire::Delta {
        content: Some(text.to_string()),
        ..Default::default()
    };
    let calls_delta = |calls: Vec<wire::ToolCallOut>| wire::Delta {
        tool_calls: Some(calls),
        ..Default::default()
    };
    let arguments = |text: &str| wire::ToolCallOut {
        index: Some(0),
        id: None,
        kind: None,
        function: wire::FunctionOut {
            name: None,
            arguments: text.to_string(),
        },
    };
    let role = wire::Delta {
        role: Some("assistant"),
        content: Some(String::new()),
        tool_calls: None,
    };
    let out = (0..rxs.len())
        .map(|i| chunk(i, role.clone(), None, None))
        .collect();
    let state = StreamState::new(rxs, out);
    let model = s.model.clone();
    let (stops, include_usage) = (p.stops.clone(), p.include_usage);
    // log-probabilities ride on the next chunk of their choice that goes out
    let pending = |c: &mut ChoiceStream| {
        (!c.logprobs.is_empty()).then(|| wire::ChoiceLogprobs {
            content: std::mem::take(&mut c.logprobs),
        })
    };
    Ok(report_dropped(
        sse_stream(state, move |st, i, event| match event {
            Event::Logprob(v) => st.choices[i].logprobs.push(v),
            Event::Piece(piece) => {
                let c = &mut st.choices[i];
                c.text.push_str(&piece);
                let stable = stable_content(&c.text, tools, format, &stops);
                if let Some(delta) = stable.strip_prefix(c.sent.as_str()) {
                    if !delta.is_empty() {
                        let lp = pending(c);
                        st.out.push_back(chunk(i, content(delta), None, lp));
                        c.sent = stable.clone();
                    }
                }
                // GLM-4 writes a call's arguments as JSON: its name, then the argument text, stream
                // as tool-call deltas (ChatGLM3's Python-style calls are converted at the end).
                if tools && format == ChatFormat::Glm4 {
                    if let Some((name, args)) = streaming_call(&c.text, &stops) {
                        if c.call.is_none() {
                            let id = format!("call_{}", random_hex(12));
                            let head = wire::ToolCallOut {
                                index: Some(0),
                                id: Some(id.clone()),
                                kind: Some("function"),
                                function: wire::FunctionOut {
                                    name: Some(name.to_string()),
                                    arguments: String::new(),
                                },
                            };
                            st.out
                                .push_back(chunk(i, calls_delta(vec![head]), None, None));
                            c.call = Some((name.to_string(), 0));
                        }
                        if let Some((_, sent)) = &mut c.call {
                            if args.len() > *sent && args.is_char_boundary(*sent) {
                                let more = arguments(&args[*sent..]);
                                *sent = args.len();
                                st.out
                                    .push_back(chunk(i, calls_delta(vec![more]), None, None));
                            }
                        }
                    }
                }
            }
            Event::Done {
                text,
                stats,
                finish,
            } => {
                let c = &mut st.choices[i];
                let (text_out, calls) = final_reply(&text, tools, format);
                if let Some(delta) = text_out.strip_prefix(c.sent.as_str()) {
                    if !delta.is_empty() {
                        st.out.push_back(chunk(i, content(delta), None, None));
                    }
                }
                let streamed_ok = match (&c.call, calls.first()) {
                    (Some((name, _)), Some(f)) => &f.name == name && f.raw.is_some(),
                    _ => false,
                };
                let reason = match (&c.call, calls.first()) {
                    (Some(_), _) if !streamed_ok => {
                        // the streamed call did not parse (or another one did): its head is out,
                        // so end it with what the model wrote and say so on the server's log
                        eprintln!(
                            "warning: a streamed GLM-4 tool call did not parse; sent as text"
                        );
                        finish_name(finish)
                    }
                    (_, None) => finish_name(finish),
                    (Some((_, sent)), Some(first)) => {
                        // the first call streamed already: the rest of its arguments, then the others
                        let raw = first.raw.as_deref().unwrap_or_default();
                        if raw.len() > *sent && raw.is_char_boundary(*sent) {
                            let more = arguments(&raw[*sent..]);
                            st.out
                                .push_back(chunk(i, calls_delta(vec![more]), None, None));
                        }
                        let rest = tool_calls_out(&calls, true);
                        if rest.len() > 1 {
                            let others = calls_delta(rest[1..].to_vec());
                            st.out.push_back(chunk(i, others, None, None));
                        }
                        "tool_calls"
                    }
                    (None, Some(_)) => {
                        let all = tool_calls_out(&calls, true);
                        st.out.push_back(chunk(i, calls_delta(all), None, None));
                        "tool_calls"
                    }
                };
                let lp = pending(c);
                st.out
                    .push_back(chunk(i, wire::Delta::default(), Some(reason), lp));
                // after every choice: the request's usage, then the end
                if let Some(total) = st.end_choice(i, stats) {
                    if include_usage {
                        st.out.push_back(to_json(&wire::ChatCompletionChunk {
                            id: id.clone(),
                            object: "chat.completion.chunk",
                            created,
                            model: model.clone(),
                            choices: vec![],
                            usage: Some(usage(prompt_tokens, &total)),
                            timings: Some(timings(&total)),
                        }));
                    }
                    st.out.push_back("[DONE]".into());
                    st.done = true;
                }
            }
            _ => {}
        }),
        dropped,
    ))
}
