-- Plan stages hold their exposure as a percentage (5 is 5%), as the API takes it, rather than
-- in thousandths of a percent (5000).
UPDATE plans SET body = json_set(body, '$.stages', (
    SELECT json_group_array(json_set(stage.value, '$.percent',
        coalesce(json_extract(stage.value, '$.percent'), 0) / 1000.0))
    FROM json_each(plans.body, '$.stages') AS stage
))
WHERE json_array_length(body, '$.stages') > 0;
