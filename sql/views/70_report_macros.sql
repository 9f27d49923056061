-- Report helpers shared by the v_report_* views (one view per chart or table of the HTML reports).
-- report_point_budget(): the most points a scatter plot shows per run and modality. Above it,
-- the views keep a deterministic sample: the rows with the smallest hash(item_id), the same
-- set wherever the rows are read (report, `clipgeo sql`, a notebook).
CREATE OR REPLACE MACRO report_point_budget() AS 3000;
-- report_text(s): a caption as charts show it (tooltips): at most 300 characters, with an ellipsis.
CREATE OR REPLACE MACRO report_text(s) AS
    CASE WHEN length(s) > 300 THEN left(s, 299) || '…' ELSE s END;
