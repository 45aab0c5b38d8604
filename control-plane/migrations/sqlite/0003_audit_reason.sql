-- Why a change was made, as its author said: required for rollouts and kills.
ALTER TABLE audit ADD COLUMN reason TEXT;
