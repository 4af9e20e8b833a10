-- The referrer's experiment arms that set a credit's terms (experiment id -> arm), kept with the credit so its
-- reversal names them too, whenever it is sent. Null: none (no experiment running, or credited before arms existed).
ALTER TABLE credits ADD COLUMN IF NOT EXISTS arms jsonb;
