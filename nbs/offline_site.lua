-- Quarto post-render script: the site makes no requests to other hosts.
-- Quarto puts require.js and jQuery from cdnjs into every page that has an HTML output, for Jupyter widgets; where a
-- page has no widget (its HTML outputs are tables), that loader is taken out again. (Fonts: theme.scss; maths:
-- html-math-method: mathml in _quarto.yml.)
local loader = {
  '<script src="https://cdnjs%.cloudflare%.com/ajax/libs/require%.js/[^"]*"[^>]*></script>\n?',
  '<script src="https://cdnjs%.cloudflare%.com/ajax/libs/jquery/[^"]*"[^>]*></script>\n?',
  '<script type="application/javascript">define%(\'jquery\', %[%],function%(%) {return window%.jQuery;}%)</script>\n?',
}
for file in (os.getenv('QUARTO_PROJECT_OUTPUT_FILES') or ''):gmatch('[^\n]+') do
  if file:match('%.html$') then
    local f = assert(io.open(file, 'r')); local html = f:read('a'); f:close()
    if not html:find('application/vnd.jupyter.widget', 1, true) then
      local changed = 0
      for _, pat in ipairs(loader) do local n; html, n = html:gsub(pat, ''); changed = changed + n end
      if changed > 0 then
        local tmp = file .. '.tmp'
        f = assert(io.open(tmp, 'w')); f:write(html); f:close()
        assert(os.rename(tmp, file))
      end
    end
  end
end
