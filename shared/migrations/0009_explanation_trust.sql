-- Explanations users can trust: which faithfulness measures an upload asked for (a project sets
-- the default), and per result the labels that passed their thresholds and the
-- out-of-distribution score with the threshold it was judged against.
ALTER TABLE projects ADD COLUMN faithfulness text NOT NULL DEFAULT 'off'
    CONSTRAINT projects_faithfulness_check CHECK (faithfulness IN ('off', 'drop', 'full'));
ALTER TABLE batches ADD COLUMN faithfulness text NOT NULL DEFAULT 'off'
    CONSTRAINT batches_faithfulness_check CHECK (faithfulness IN ('off', 'drop', 'full'));
-- NULL in results written before they were computed; an empty array is "no finding".
ALTER TABLE results ADD COLUMN positive_labels jsonb;
-- NULL when the model bundle carries no reference: the score is unavailable.
ALTER TABLE results ADD COLUMN ood_score real;
ALTER TABLE results ADD COLUMN ood_threshold real;
