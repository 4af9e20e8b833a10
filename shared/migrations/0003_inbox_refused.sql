-- An event refused by a business rule stays claimed, marked with the delivery that refused it ('' for the first,
-- else the `jifen-replayed-from` of a `jifen dlq replay`): a redelivery of the same record after a crash is a
-- duplicate and is not dead-lettered twice, while each replay of it is judged again, once.
ALTER TABLE inbox ADD COLUMN IF NOT EXISTS refused_in text;
