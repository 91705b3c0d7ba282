-- README.md: `nbdev_readme` renders index.ipynb to GitHub markdown and moves it to the repository root, so
-- relative links and images (written for the site, next to the notebooks) are made to point into nbs/, and the
-- page's one-line summary, which the GitHub-markdown title block leaves out, is put back under the title.
local function into_nbs(url)
  if url:match('^%a[%w+.-]*:') or url:match('^[#/]') then return url end
  if url:match('^index_files/') then return url end  -- figures of the index's own cells: nbdev_readme moves them beside README.md
  return 'nbs/' .. url
end

return {{
  Image = function(el) if quarto.doc.is_format('gfm') then el.src = into_nbs(el.src) end; return el end,
  Link = function(el) if quarto.doc.is_format('gfm') then el.target = into_nbs(el.target) end; return el end,
  Pandoc = function(doc)
    if quarto.doc.is_format('gfm') and doc.meta.description then
      table.insert(doc.blocks, 1, pandoc.BlockQuote(pandoc.Para(doc.meta.description)))
    end
    return doc
  end,
}}
