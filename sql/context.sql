-- Args and context: from the body and from steps; context changes made
-- inside a step commit with it, a failed attempt rolls them back.
SET chrono_forge.fake_now = '2030-01-01 00:00:00+00';
CREATE TABLE ctx_seen (label text, value jsonb);

CREATE FUNCTION ctx_step(args jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    PERFORM chrono_forge.context_set('from_step', to_jsonb(chrono_forge.key()));
    RETURN chrono_forge.context();
END $$;
CREATE FUNCTION ctx_failing_step() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM chrono_forge.context_set('doomed', '"never saved"');
    RAISE EXCEPTION 'step fails after touching the context';
END $$;

CREATE PROCEDURE ctx_wf(args jsonb) LANGUAGE plpgsql AS $$
DECLARE r jsonb;
BEGIN
    INSERT INTO ctx_seen VALUES ('args', chrono_forge.args()),
        ('arg user', chrono_forge.arg('user')), ('arg missing', chrono_forge.arg('nope')),
        ('key', to_jsonb(chrono_forge.key())),
        ('id matches', to_jsonb(chrono_forge.workflow_id() = (SELECT id FROM chrono_forge.workflows WHERE key = 'c1')));
    PERFORM chrono_forge.context_set('n', '1');
    INSERT INTO ctx_seen VALUES ('set_once new', to_jsonb(chrono_forge.context_set_once('once', '"first"'))),
        ('set_once again', to_jsonb(chrono_forge.context_set_once('once', '"second"'))),
        ('has once', to_jsonb(chrono_forge.context_has('once'))),
        ('has nope', to_jsonb(chrono_forge.context_has('nope'))),
        ('fetch nope', chrono_forge.context_fetch('nope', '"dflt"')),
        ('get once', chrono_forge.context_get('once'));
    PERFORM chrono_forge.context_set('nothing', NULL);
    INSERT INTO ctx_seen VALUES ('fetch null', chrono_forge.context_fetch('nothing', '"dflt"'));
    PERFORM chrono_forge.context_merge('{"a": 1, "b": [1, 2]}');
    PERFORM chrono_forge.context_merge_once('{"a": 99, "c": {"d": true}}');
    CALL chrono_forge.durably_execute('ctx_step', r);
    INSERT INTO ctx_seen VALUES ('step saw', r);
    CALL chrono_forge.durably_execute('ctx_failing_step',
        retry_policy => chrono_forge.retry_policy(1));
END $$;

SELECT chrono_forge.start('ctx_wf', 'c1', '{"user": 7}') AS id \gset
CALL chrono_forge.run_pending();
SELECT label, value FROM ctx_seen ORDER BY ctid;
-- The failing step's context change is gone; the rest was saved.
SELECT state, context FROM chrono_forge.workflows WHERE id = :id;
SELECT context ? 'doomed' AS doomed_saved FROM chrono_forge.error_logs WHERE workflow_id = :id;

-- Bad values: too large (16 KB as JSON), not an object for merge.
CREATE PROCEDURE ctx_big_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    PERFORM chrono_forge.context_set(args->>'k', to_jsonb(repeat('x', (args->>'n')::int)));
END $$;
CREATE PROCEDURE ctx_merge_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    PERFORM chrono_forge.context_merge('[1, 2]');
END $$;
SELECT chrono_forge.start('ctx_big_wf', 'fits', '{"k": "fits", "n": 16382}') > 0 AS started;
SELECT chrono_forge.start('ctx_big_wf', 'too_big', '{"k": "big", "n": 16383}') > 0 AS started;
SELECT chrono_forge.start('ctx_merge_wf', 'not_object') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT w.key, w.state, length(w.context->>w.key) AS stored_length, e.error_class, e.error_message
  FROM chrono_forge.workflows w LEFT JOIN chrono_forge.error_logs e ON e.workflow_id = w.id
 WHERE w.workflow IN ('public.ctx_big_wf', 'public.ctx_merge_wf') ORDER BY w.id;

DELETE FROM chrono_forge.workflows WHERE workflow LIKE 'public.ctx\_%';
