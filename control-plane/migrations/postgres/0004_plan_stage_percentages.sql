-- Plan stages hold their exposure as a percentage (5 is 5%), as the API takes it, rather than
-- in thousandths of a percent (5000).
UPDATE plans SET body = jsonb_set(body::jsonb, '{stages}', (
    SELECT jsonb_agg(jsonb_set(stage.value, '{percent}',
        to_jsonb(coalesce((stage.value->>'percent')::numeric, 0) / 1000)) ORDER BY stage.at)
    FROM jsonb_array_elements(plans.body::jsonb->'stages') WITH ORDINALITY AS stage(value, at)
))::text
WHERE jsonb_array_length(body::jsonb->'stages') > 0;
